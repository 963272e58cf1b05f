//! BAR0 block layouts (placeholder until filled in).
/// Placeholder.
pub struct Layout;
/// Placeholder.
pub const FB: Layout = Layout;
/// Placeholder.
pub const ART: Layout = Layout;
/// Placeholder.
pub const ADVA: Layout = Layout;
/// Placeholder.
pub const ADVA_X1: Layout = Layout;
