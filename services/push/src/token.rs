//! Signed, expiring connection tokens.
//!
//! A device proves who it is before its connection is upgraded: the token
//! names the member, the device, the device type and an expiry, and carries
//! an HMAC-SHA256 over those fields under a key shared by the token issuer
//! and every edge node. Pure: the current time is passed in.
//!
//! Wire form: `tc1.<member>.<device>.<device_type>.<topics>.<expires_unix_s>.<hmac hex>`
//! where `<topics>` lists the broadcast topics the device may subscribe to,
//! separated by `,` (empty: none). Names are 1 to 128 characters from
//! `[A-Za-z0-9_-]`, so `.` and `,` never occur inside one.

use std::fmt;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Prefix and version of the token format.
const VERSION: &str = "tc1";
/// Longest accepted token.
pub const MAX_TOKEN_LEN: usize = 2_048;
/// Most topics in one token.
pub const MAX_TOPICS: usize = 8;
/// Longest member, device or device-type name.
pub const MAX_NAME_LEN: usize = 128;
/// The device type that may publish (`POST /v1/push`) instead of receive.
pub const PUBLISHER: &str = "publisher";

/// Why a token or key was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `tc1.member.device.type.topics.expiry.mac`.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// A field that is empty, too long or has characters outside `[A-Za-z0-9_-]`.
    #[error("{0} must be 1 to {MAX_NAME_LEN} characters from [A-Za-z0-9_-]")]
    Name(&'static str),
    /// The MAC does not match (wrong key or altered token).
    #[error("token signature does not verify")]
    BadSignature,
    /// The token expired.
    #[error("token expired {ago_s} s ago")]
    Expired {
        /// Seconds since expiry.
        ago_s: u64,
    },
    /// The key file is unreadable or not 64 hex digits.
    #[error("token key: {0}")]
    Key(String),
}

/// What a token asserts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    /// The member the device belongs to.
    pub member: String,
    /// The device (unique per member).
    pub device: String,
    /// Device type (`tv`, `phone`, `browser`…, or [`PUBLISHER`]).
    pub device_type: String,
    /// Broadcast topics the device may subscribe to.
    pub topics: Vec<String>,
    /// Unix seconds after which the token is refused.
    pub expires_unix_s: u64,
}

/// The shared signing key (32 bytes).
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Whether `s` is a valid member, device or device-type name.
#[must_use]
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str, out: &mut [u8]) -> bool {
    if s.len() != out.len() * 2 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return false;
    }
    for (i, o) in out.iter_mut().enumerate() {
        match u8::from_str_radix(&s[2 * i..2 * i + 2], 16) {
            Ok(v) => *o = v,
            Err(_) => return false,
        }
    }
    true
}

impl TokenKey {
    /// A fresh random key from the kernel's entropy.
    ///
    /// # Errors
    /// `getrandom` failed.
    pub fn generate() -> Result<Self, TokenError> {
        let mut key = [0u8; 32];
        // SAFETY: `key` is a valid, writable buffer of `key.len()` bytes.
        let n = unsafe { libc::getrandom(key.as_mut_ptr().cast(), key.len(), 0) };
        if n != 32 {
            return Err(TokenError::Key(format!(
                "getrandom: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(Self(key))
    }

    /// A key from 64 hex digits (surrounding whitespace ignored).
    ///
    /// # Errors
    /// Not 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self, TokenError> {
        let mut key = [0u8; 32];
        if unhex(s.trim(), &mut key) {
            Ok(Self(key))
        } else {
            Err(TokenError::Key(
                "expected 64 hex digits (make one with `timecard-push keygen`)".into(),
            ))
        }
    }

    /// Reads a key file written by [`TokenKey::to_hex`].
    ///
    /// # Errors
    /// Unreadable file or bad contents.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| TokenError::Key(format!("reading {}: {e}", path.display())))?;
        Self::from_hex(&text).map_err(|e| TokenError::Key(format!("{}: {e}", path.display())))
    }

    /// The key as 64 hex digits.
    #[must_use]
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    fn mac(&self, signed: &str) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(signed.as_bytes());
        mac
    }

    /// Signs `claims`.
    ///
    /// # Errors
    /// A name that is not valid.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        for (what, v) in [
            ("member", &claims.member),
            ("device", &claims.device),
            ("device type", &claims.device_type),
        ] {
            if !valid_name(v) {
                return Err(TokenError::Name(what));
            }
        }
        if claims.topics.len() > MAX_TOPICS {
            return Err(TokenError::Malformed("more than 8 topics"));
        }
        if !claims.topics.iter().all(|t| valid_name(t)) {
            return Err(TokenError::Name("topic"));
        }
        let signed = format!(
            "{VERSION}.{}.{}.{}.{}.{}",
            claims.member,
            claims.device,
            claims.device_type,
            claims.topics.join(","),
            claims.expires_unix_s
        );
        let tag = self.mac(&signed).finalize().into_bytes();
        Ok(format!("{signed}.{}", hex(&tag)))
    }

    /// Checks a token's form, signature and expiry at `now_unix_s`.
    ///
    /// # Errors
    /// Malformed, forged or expired.
    pub fn verify(&self, token: &str, now_unix_s: u64) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let (signed, tag_hex) = token
            .rsplit_once('.')
            .ok_or(TokenError::Malformed("no signature"))?;
        let mut tag = [0u8; 32];
        if !unhex(tag_hex, &mut tag) {
            return Err(TokenError::Malformed("signature is not 64 hex digits"));
        }
        let mut fields = signed.split('.');
        if fields.next() != Some(VERSION) {
            return Err(TokenError::Malformed("does not start with tc1."));
        }
        let (Some(member), Some(device), Some(device_type), Some(topics), Some(expiry), None) = (
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
            fields.next(),
        ) else {
            return Err(TokenError::Malformed("expected 7 dot-separated fields"));
        };
        self.mac(signed)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let expires_unix_s: u64 = expiry
            .parse()
            .map_err(|_| TokenError::Malformed("expiry is not a number"))?;
        if now_unix_s >= expires_unix_s {
            return Err(TokenError::Expired {
                ago_s: now_unix_s - expires_unix_s,
            });
        }
        for (what, v) in [
            ("member", member),
            ("device", device),
            ("device type", device_type),
        ] {
            if !valid_name(v) {
                return Err(TokenError::Name(what));
            }
        }
        let topics: Vec<String> = if topics.is_empty() {
            Vec::new()
        } else {
            topics.split(',').map(str::to_owned).collect()
        };
        if topics.len() > MAX_TOPICS || !topics.iter().all(|t| valid_name(t)) {
            return Err(TokenError::Name("topic"));
        }
        Ok(Claims {
            member: member.to_owned(),
            device: device.to_owned(),
            device_type: device_type.to_owned(),
            topics,
            expires_unix_s,
        })
    }
}

/// Seconds since the Unix epoch on the system clock.
#[must_use]
pub fn unix_now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claims() -> Claims {
        Claims {
            member: "m1".into(),
            device: "tv-1".into(),
            device_type: "tv".into(),
            topics: vec!["news".into(), "sports".into()],
            expires_unix_s: 1_000,
        }
    }

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let key = TokenKey::generate().unwrap();
        let t = key.issue(&claims()).unwrap();
        assert!(t.starts_with("tc1.m1.tv-1.tv.news,sports.1000."));
        assert_eq!(key.verify(&t, 999).unwrap(), claims());
        assert_eq!(key.verify(&t, 1_005), Err(TokenError::Expired { ago_s: 5 }));
        let other = TokenKey::generate().unwrap();
        assert_eq!(other.verify(&t, 999), Err(TokenError::BadSignature));
        let forged = t.replace("tc1.m1.", "tc1.m2.");
        assert_eq!(key.verify(&forged, 999), Err(TokenError::BadSignature));
        let later = t.replace(".1000.", ".9000.");
        assert_eq!(key.verify(&later, 999), Err(TokenError::BadSignature));
        let more_topics = t.replace("news,sports", "news,sports,all");
        assert_eq!(key.verify(&more_topics, 999), Err(TokenError::BadSignature));
        let none = Claims {
            topics: Vec::new(),
            ..claims()
        };
        let t2 = key.issue(&none).unwrap();
        assert!(t2.starts_with("tc1.m1.tv-1.tv..1000."));
        assert_eq!(key.verify(&t2, 0).unwrap(), none);
        let round = TokenKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(round.verify(&t, 0).unwrap(), claims());
    }

    #[test]
    fn bad_names_and_keys_are_refused() {
        let key = TokenKey::generate().unwrap();
        let mut c = claims();
        c.member = "a.b".into();
        assert_eq!(key.issue(&c), Err(TokenError::Name("member")));
        c.member = String::new();
        assert!(key.issue(&c).is_err());
        assert!(TokenKey::from_hex("abc").is_err());
        assert!(TokenKey::from_hex(&"g".repeat(64)).is_err());
        c.member = "m".into();
        c.topics = vec!["a,b".into()];
        assert_eq!(key.issue(&c), Err(TokenError::Name("topic")));
        for bad in [
            "",
            ".",
            "tc1",
            "x.y.z.w.1.00",
            "tc1.m.d.t.1.00",
            &"a".repeat(3000),
        ] {
            assert!(key.verify(bad, 0).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics_and_never_verifies(s in ".{0,700}") {
            let key = TokenKey::from_hex(&"11".repeat(32)).unwrap();
            prop_assert!(key.verify(&s, 0).is_err());
        }

        #[test]
        fn any_single_byte_change_is_refused(i in 0usize..200, b in 0u8..128) {
            let key = TokenKey::from_hex(&"22".repeat(32)).unwrap();
            let t = key.issue(&claims()).unwrap();
            let mut bytes = t.clone().into_bytes();
            let i = i % bytes.len();
            prop_assume!(bytes[i] != b && !(bytes[i].is_ascii_hexdigit() && b.is_ascii_hexdigit() && bytes[i].eq_ignore_ascii_case(&b)));
            bytes[i] = b;
            if let Ok(s) = String::from_utf8(bytes) {
                prop_assert!(key.verify(&s, 0).is_err());
            }
        }
    }
}
