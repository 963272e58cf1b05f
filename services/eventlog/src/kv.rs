//! A key-value store for checkpoints and service state, over one of two
//! backends: an embedded `redb` database (ACID; a batch is one transaction)
//! or a JetStream KV bucket (a batch is written key by key in order, so
//! writers must order their keys so that a crash part-way leaves a state
//! they can recover from — the counter writes per-counter checkpoints before
//! the global one).

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableDefinition};

use crate::nats::NatsKv;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Why the store failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The embedded database failed.
    #[error("kv store: {0}")]
    Embedded(String),
    /// The NATS backend failed.
    #[error("NATS KV: {0}")]
    Nats(String),
    /// A key NATS cannot hold (empty, or characters outside `[-/_=.A-Za-z0-9]`).
    #[error("invalid key {0:?}: use 1-256 characters from [-/_=.A-Za-z0-9]")]
    BadKey(String),
}

fn embedded<E: std::fmt::Display>(e: E) -> KvError {
    KvError::Embedded(e.to_string())
}

/// Checks that a key is portable across both backends.
pub fn check_key(key: &str) -> Result<(), KvError> {
    let ok = !key.is_empty()
        && key.len() <= 256
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(KvError::BadKey(key.chars().take(80).collect()))
    }
}

/// The embedded store.
#[derive(Clone)]
pub struct RedbKv {
    db: Arc<Database>,
}

impl std::fmt::Debug for RedbKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedbKv")
    }
}

impl RedbKv {
    /// Opens (creating) the database file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        let db = Database::create(path.as_ref())
            .map_err(|e| KvError::Embedded(format!("{}: {e}", path.as_ref().display())))?;
        let tx = db.begin_write().map_err(embedded)?;
        tx.open_table(TABLE).map_err(embedded)?;
        tx.commit().map_err(embedded)?;
        Ok(Self { db: Arc::new(db) })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let tx = self.db.begin_read().map_err(embedded)?;
        let t = tx.open_table(TABLE).map_err(embedded)?;
        Ok(t.get(key).map_err(embedded)?.map(|v| v.value().to_vec()))
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let tx = self.db.begin_read().map_err(embedded)?;
        let t = tx.open_table(TABLE).map_err(embedded)?;
        keys.iter()
            .map(|k| {
                Ok(t.get(k.as_str())
                    .map_err(embedded)?
                    .map(|v| v.value().to_vec()))
            })
            .collect()
    }

    fn put_all(&self, items: &[(String, Vec<u8>)]) -> Result<(), KvError> {
        let tx = self.db.begin_write().map_err(embedded)?;
        {
            let mut t = tx.open_table(TABLE).map_err(embedded)?;
            for (k, v) in items {
                t.insert(k.as_str(), v.as_slice()).map_err(embedded)?;
            }
        }
        tx.commit().map_err(embedded)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        let tx = self.db.begin_write().map_err(embedded)?;
        {
            let mut t = tx.open_table(TABLE).map_err(embedded)?;
            t.remove(key).map_err(embedded)?;
        }
        tx.commit().map_err(embedded)
    }

    fn scan_fold<A>(
        &self,
        prefix: &str,
        mut acc: A,
        mut f: impl FnMut(&mut A, &str, &[u8]) -> Result<(), KvError>,
    ) -> Result<A, KvError> {
        let tx = self.db.begin_read().map_err(embedded)?;
        let t = tx.open_table(TABLE).map_err(embedded)?;
        for item in t.range(prefix..).map_err(embedded)? {
            let (k, v) = item.map_err(embedded)?;
            if !k.value().starts_with(prefix) {
                break;
            }
            f(&mut acc, k.value(), v.value())?;
        }
        Ok(acc)
    }

    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, KvError> {
        self.scan_fold(prefix, Vec::new(), |out, k, v| {
            out.push((k.to_owned(), v.to_vec()));
            Ok(())
        })
    }
}

/// The key-value store (cheap to clone).
#[derive(Clone, Debug)]
pub enum Kv {
    /// `redb` on local disk.
    Embedded(RedbKv),
    /// A JetStream KV bucket.
    Nats(NatsKv),
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KvError> + Send + 'static,
) -> Result<T, KvError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| KvError::Embedded(e.to_string()))?
}

impl Kv {
    /// The value of `key`, if any.
    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        match self {
            Self::Embedded(db) => {
                let (db, key) = (db.clone(), key.to_owned());
                blocking(move || db.get(&key)).await
            }
            Self::Nats(kv) => kv.get(key).await,
        }
    }

    /// The values of `keys`, in order (one read transaction when embedded).
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        for k in &keys {
            check_key(k)?;
        }
        match self {
            Self::Embedded(db) => {
                let db = db.clone();
                blocking(move || db.get_many(&keys)).await
            }
            Self::Nats(kv) => {
                let mut out = Vec::with_capacity(keys.len());
                for k in &keys {
                    out.push(kv.get(k).await?);
                }
                Ok(out)
            }
        }
    }

    /// Writes every pair: atomically in the embedded store, in order on NATS.
    pub async fn put_all(&self, items: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        for (k, _) in &items {
            check_key(k)?;
        }
        match self {
            Self::Embedded(db) => {
                let db = db.clone();
                blocking(move || db.put_all(&items)).await
            }
            Self::Nats(kv) => kv.put_all(items).await,
        }
    }

    /// Writes one pair.
    pub async fn put(&self, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        self.put_all(vec![(key.to_owned(), value)]).await
    }

    /// Removes `key` (no error if absent).
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        check_key(key)?;
        match self {
            Self::Embedded(db) => {
                let (db, key) = (db.clone(), key.to_owned());
                blocking(move || db.delete(&key)).await
            }
            Self::Nats(kv) => kv.delete(key).await,
        }
    }

    /// Folds `f` over every pair whose key starts with `prefix`, in key
    /// order, without holding the values (embedded: one read transaction,
    /// streaming; NATS: the values are fetched and dropped one by one after
    /// `scan`).
    pub async fn scan_fold<A: Send + 'static>(
        &self,
        prefix: &str,
        acc: A,
        mut f: impl FnMut(&mut A, &str, &[u8]) -> Result<(), KvError> + Send + 'static,
    ) -> Result<A, KvError> {
        match self {
            Self::Embedded(db) => {
                let (db, prefix) = (db.clone(), prefix.to_owned());
                blocking(move || db.scan_fold(&prefix, acc, f)).await
            }
            Self::Nats(kv) => {
                let mut acc = acc;
                for (k, v) in kv.scan(prefix).await? {
                    f(&mut acc, &k, &v)?;
                }
                Ok(acc)
            }
        }
    }

    /// Every pair whose key starts with `prefix`, in key order.
    pub async fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, KvError> {
        match self {
            Self::Embedded(db) => {
                let (db, prefix) = (db.clone(), prefix.to_owned());
                blocking(move || db.scan(&prefix)).await
            }
            Self::Nats(kv) => kv.scan(prefix).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_for_both_backends() {
        assert!(check_key("counter/ns1/c.x=1").is_ok());
        for bad in ["", ".x", "x.", "a b", "a*b", "a>b", &"k".repeat(257)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn embedded_store_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        {
            let kv = Kv::Embedded(RedbKv::open(&path).unwrap());
            kv.put_all(vec![
                ("a/1".into(), b"x".to_vec()),
                ("a/2".into(), b"y".to_vec()),
                ("b".into(), b"z".to_vec()),
            ])
            .await
            .unwrap();
            kv.delete("a/2").await.unwrap();
            assert_eq!(kv.get("a/1").await.unwrap().as_deref(), Some(&b"x"[..]));
        }
        let kv = Kv::Embedded(RedbKv::open(&path).unwrap());
        let many = kv
            .get_many(vec!["b".into(), "a/2".into(), "a/1".into()])
            .await
            .unwrap();
        assert_eq!(many, vec![Some(b"z".to_vec()), None, Some(b"x".to_vec())]);
        let got = kv.scan("a/").await.unwrap();
        assert_eq!(got, vec![("a/1".to_owned(), b"x".to_vec())]);
        assert!(kv.get("a b").await.is_err());
    }
}
