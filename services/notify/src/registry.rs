//! The push registry: which devices of a member are online and how to reach
//! them (channel and token). Soft state with a TTL, as in Zuul Push: a
//! device re-registers (heartbeats) while it is connected; a device that
//! stops heartbeating, or whose node crashed, disappears when its TTL runs
//! out instead of lingering as a phantom record.
//!
//! In-memory and sharded by member; bounded in devices per member and in
//! total, so a registration flood is refused with an error rather than
//! growing without limit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use outbound::Channel;

use crate::model::{DeviceType, ModelError, valid_name};

const SHARDS: usize = 16;

/// Member → devices.
type Devices = HashMap<Arc<str>, Vec<Arc<Device>>>;
/// Most devices one member may have registered.
pub const MAX_DEVICES_PER_MEMBER: usize = 16;

/// Why a registration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// A bad id, type or token.
    #[error(transparent)]
    Invalid(#[from] ModelError),
    /// A device id or token that is empty, too long or has odd characters.
    #[error("{0}")]
    Field(String),
    /// The member already has the maximum number of devices.
    #[error("member has {MAX_DEVICES_PER_MEMBER} devices registered; unregister one first")]
    MemberFull,
    /// The registry holds its maximum number of devices.
    #[error("push registry is full ({0} devices)")]
    Full(usize),
}

/// A device that can receive pushes.
#[derive(Debug)]
pub struct Device {
    /// Device id (unique per member).
    pub id: Arc<str>,
    /// What kind of device.
    pub device_type: DeviceType,
    /// How to reach it.
    pub channel: Channel,
    /// APNs device token, FCM registration token, or the edge connection id.
    pub token: Arc<str>,
    /// Expiry, ms since the registry's epoch.
    expires_ms: AtomicU64,
}

/// A registration request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// Device id.
    pub id: String,
    /// Device type.
    pub device_type: DeviceType,
    /// Channel.
    pub channel: Channel,
    /// Token for the channel (defaults to the device id for the edge).
    pub token: String,
}

/// The registry (cheap to clone).
#[derive(Clone, Debug)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    epoch: Instant,
    ttl: Duration,
    max_devices: usize,
    devices: AtomicU64,
    shards: Vec<RwLock<Devices>>,
}

fn lock_read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn lock_write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Registry {
    /// A registry whose entries live `ttl` after their last registration,
    /// holding at most `max_devices`.
    #[must_use]
    pub fn new(ttl: Duration, max_devices: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                ttl,
                max_devices,
                devices: AtomicU64::new(0),
                shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            }),
        }
    }

    fn now_ms(&self) -> u64 {
        self.inner.epoch.elapsed().as_millis() as u64
    }

    fn shard(&self, member: &str) -> &RwLock<Devices> {
        &self.inner.shards[crate::model::shard_of(member, SHARDS)]
    }

    /// Registers a device or renews its TTL (a heartbeat); a changed type,
    /// channel or token replaces the old record.
    pub fn register(&self, member: &str, r: Registration) -> Result<(), RegistryError> {
        crate::model::check_member(member)?;
        if !valid_name(&r.id, 128) {
            return Err(RegistryError::Field(format!(
                "device id {:?} must be 1 to 128 characters from [A-Za-z0-9_-]",
                r.id.chars().take(80).collect::<String>()
            )));
        }
        let token_ok = !r.token.is_empty()
            && r.token.len() <= 4096
            && r.token.bytes().all(|b| b.is_ascii_graphic());
        if !token_ok {
            return Err(RegistryError::Field(
                "device token must be 1 to 4096 printable ASCII characters".into(),
            ));
        }
        let expires = self.now_ms() + self.inner.ttl.as_millis() as u64;
        let mut shard = lock_write(self.shard(member));
        if let Some(devices) = shard.get_mut(member)
            && let Some(i) = devices.iter().position(|d| *d.id == *r.id)
        {
            let d = &devices[i];
            if d.device_type == r.device_type && d.channel == r.channel && *d.token == *r.token {
                d.expires_ms.store(expires, Ordering::Relaxed);
                return Ok(());
            }
            devices.remove(i);
            self.inner.devices.fetch_sub(1, Ordering::Relaxed);
        }
        if shard
            .get(member)
            .is_some_and(|d| d.len() >= MAX_DEVICES_PER_MEMBER)
        {
            return Err(RegistryError::MemberFull);
        }
        // Reserve the slot first, so concurrent registrations on other
        // shards cannot overshoot the limit.
        let max = self.inner.max_devices as u64;
        if self
            .inner
            .devices
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_err()
        {
            return Err(RegistryError::Full(self.inner.max_devices));
        }
        let devices = shard.entry(Arc::from(member)).or_default();
        devices.push(Arc::new(Device {
            id: r.id.into(),
            device_type: r.device_type,
            channel: r.channel,
            token: r.token.into(),
            expires_ms: AtomicU64::new(expires),
        }));
        Ok(())
    }

    /// Removes a device; whether it was there.
    pub fn unregister(&self, member: &str, device_id: &str) -> bool {
        let mut shard = lock_write(self.shard(member));
        let Some(devices) = shard.get_mut(member) else {
            return false;
        };
        let before = devices.len();
        devices.retain(|d| &*d.id != device_id);
        let removed = before - devices.len();
        if devices.is_empty() {
            shard.remove(member);
        }
        self.inner
            .devices
            .fetch_sub(removed as u64, Ordering::Relaxed);
        removed > 0
    }

    /// Removes a device if it is still registered with `token` (a provider
    /// said the token is dead; a re-registration with a new token stays).
    pub fn forget_token(&self, member: &str, device_id: &str, token: &str) {
        let still_same = lock_read(self.shard(member))
            .get(member)
            .is_some_and(|ds| ds.iter().any(|d| &*d.id == device_id && &*d.token == token));
        if still_same {
            self.unregister(member, device_id);
        }
    }

    /// Calls `f` for each online device of `member`.
    pub fn for_each_online(&self, member: &str, mut f: impl FnMut(&Arc<Device>)) {
        let now = self.now_ms();
        let shard = lock_read(self.shard(member));
        if let Some(devices) = shard.get(member) {
            for d in devices {
                if d.expires_ms.load(Ordering::Relaxed) > now {
                    f(d);
                }
            }
        }
    }

    /// Drops expired devices and returns them with their member.
    pub fn sweep(&self) -> Vec<(Arc<str>, Arc<Device>)> {
        let now = self.now_ms();
        let mut removed = Vec::new();
        for shard in &self.inner.shards {
            let mut shard = lock_write(shard);
            shard.retain(|member, devices| {
                devices.retain(|d| {
                    let live = d.expires_ms.load(Ordering::Relaxed) > now;
                    if !live {
                        removed.push((member.clone(), d.clone()));
                    }
                    live
                });
                !devices.is_empty()
            });
        }
        self.inner
            .devices
            .fetch_sub(removed.len() as u64, Ordering::Relaxed);
        removed
    }

    /// Devices held (including expired ones not swept yet).
    #[must_use]
    pub fn len(&self) -> usize {
        self.inner.devices.load(Ordering::Relaxed) as usize
    }

    /// Whether no device is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The TTL.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: &str, t: DeviceType, c: Channel) -> Registration {
        Registration {
            id: id.into(),
            device_type: t,
            channel: c,
            token: format!("tok-{id}"),
        }
    }

    fn online(r: &Registry, m: &str) -> Vec<String> {
        let mut v = Vec::new();
        r.for_each_online(m, |d| v.push(d.id.to_string()));
        v
    }

    #[test]
    fn devices_register_renew_and_expire() {
        let r = Registry::new(Duration::from_millis(50), 100);
        r.register("m1", reg("tv1", DeviceType::Tv, Channel::Edge))
            .unwrap();
        r.register("m1", reg("ph1", DeviceType::Phone, Channel::Apns))
            .unwrap();
        r.register("m1", reg("tv1", DeviceType::Tv, Channel::Edge))
            .unwrap();
        assert_eq!(online(&r, "m1"), ["tv1", "ph1"]);
        assert_eq!(r.len(), 2);
        std::thread::sleep(Duration::from_millis(80));
        assert!(online(&r, "m1").is_empty());
        assert_eq!(r.sweep().len(), 2);
        assert!(r.is_empty());
    }

    #[test]
    fn limits_and_bad_input_are_refused() {
        let r = Registry::new(Duration::from_secs(60), 20);
        for i in 0..MAX_DEVICES_PER_MEMBER {
            r.register("m", reg(&format!("d{i}"), DeviceType::Tv, Channel::Edge))
                .unwrap();
        }
        assert_eq!(
            r.register("m", reg("extra", DeviceType::Tv, Channel::Edge)),
            Err(RegistryError::MemberFull)
        );
        for i in 0..4 {
            r.register("n", reg(&format!("d{i}"), DeviceType::Tv, Channel::Edge))
                .unwrap();
        }
        assert_eq!(
            r.register("o", reg("x", DeviceType::Tv, Channel::Edge)),
            Err(RegistryError::Full(20))
        );
        assert!(
            r.register("bad member", reg("x", DeviceType::Tv, Channel::Edge))
                .is_err()
        );
        assert!(
            r.register("p", reg("bad id", DeviceType::Tv, Channel::Edge))
                .is_err()
        );
        let mut no_token = reg("x", DeviceType::Tv, Channel::Edge);
        no_token.token.clear();
        assert!(r.register("p", no_token).is_err());
        assert!(r.unregister("n", "d0"));
        assert!(!r.unregister("n", "d0"));
        r.forget_token("n", "d1", "other-token");
        assert_eq!(online(&r, "n").len(), 3);
        r.forget_token("n", "d1", "tok-d1");
        assert_eq!(online(&r, "n").len(), 2);
    }
}
