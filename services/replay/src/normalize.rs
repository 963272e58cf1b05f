//! Normalization rules and the structural diff.
//!
//! Two answers to the same request differ in ways that are not behaviour:
//! timestamps taken a few microseconds apart, freshly generated ids, lists
//! whose order means nothing, the last bits of a float. [`Rules`] name
//! those places by path pattern (`/changes/*/stored`, `*` matching any key
//! or index) and [`diff`] compares two JSON values under them:
//!
//! - **timestamps**: integers (ns) equal within the given tolerance (the
//!   two exchanges' windows of uncertainty);
//! - **ids**: only presence and type are compared;
//! - **unordered**: arrays compared as multisets (elements are paired by
//!   their content with the ids, timestamps and ignored fields masked, then
//!   compared pair by pair under all rules);
//! - **ignore**: not compared at all;
//! - **float tolerance**: relative, for numbers that are not integers.
//!
//! Everything else must be equal. Pure: values in, differences out.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::record::{Exchange, Interval};

/// One step of a concrete path.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A path pattern: `/a/*/b`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(Vec<Option<String>>);

impl Pattern {
    /// Parses `/seg/seg/…` (`*` matches any one key or index; `~1` is `/`
    /// and `~0` is `~`, as in JSON Pointer).
    ///
    /// # Errors
    /// A pattern that does not start with `/`.
    pub fn parse(s: &str) -> Result<Self, RulesError> {
        let Some(rest) = s.strip_prefix('/') else {
            return Err(RulesError::Pattern(s.chars().take(200).collect()));
        };
        if rest.is_empty() {
            return Ok(Self(Vec::new()));
        }
        Ok(Self(
            rest.split('/')
                .map(|seg| (seg != "*").then(|| seg.replace("~1", "/").replace("~0", "~")))
                .collect(),
        ))
    }

    fn matches(&self, path: &[Step]) -> bool {
        self.0.len() == path.len()
            && self.0.iter().zip(path).all(|(p, s)| match (p, s) {
                (None, _) => true,
                (Some(k), Step::Key(key)) => k == key,
                (Some(k), Step::Index(i)) => k.parse::<usize>().is_ok_and(|n| n == *i),
            })
    }
}

/// Why rules could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RulesError {
    /// A path pattern that does not start with `/`.
    #[error("path pattern {0:?} must start with /")]
    Pattern(String),
    /// Not a rules document.
    #[error("bad rules: {0}")]
    Syntax(String),
    /// A tolerance that is negative or not a number.
    #[error("float_tolerance must be a number ≥ 0")]
    Tolerance,
}

/// The rules, as written in a rules file (JSON).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    timestamps: Vec<String>,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    unordered: Vec<String>,
    #[serde(default)]
    ignore: Vec<String>,
    #[serde(default)]
    float_tolerance: f64,
}

/// Normalization rules.
#[derive(Clone, Debug, Default)]
pub struct Rules {
    timestamps: Vec<Pattern>,
    ids: Vec<Pattern>,
    unordered: Vec<Pattern>,
    ignore: Vec<Pattern>,
    float_tolerance: f64,
}

impl Rules {
    /// Reads rules from JSON:
    /// `{"timestamps": ["/changes/*/stored/0"], "ids": ["/id"], "unordered":
    /// ["/changes"], "ignore": ["/took_ms"], "float_tolerance": 1e-9}`.
    ///
    /// # Errors
    /// Bad JSON, unknown fields, bad patterns or tolerance.
    pub fn from_json(text: &str) -> Result<Self, RulesError> {
        let f: RulesFile =
            serde_json::from_str(text).map_err(|e| RulesError::Syntax(e.to_string()))?;
        if !(f.float_tolerance >= 0.0 && f.float_tolerance.is_finite()) {
            return Err(RulesError::Tolerance);
        }
        let parse = |v: &[String]| {
            v.iter()
                .map(|p| Pattern::parse(p))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            timestamps: parse(&f.timestamps)?,
            ids: parse(&f.ids)?,
            unordered: parse(&f.unordered)?,
            ignore: parse(&f.ignore)?,
            float_tolerance: f.float_tolerance,
        })
    }

    fn any(list: &[Pattern], path: &[Step]) -> bool {
        list.iter().any(|p| p.matches(path))
    }
}

/// What kind of difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Different values of the same type.
    Value,
    /// Different JSON types.
    Type,
    /// In the original only.
    Missing,
    /// In the candidate only.
    Extra,
    /// Timestamps further apart than the tolerance.
    Timestamp,
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// JSON Pointer of the place (in the original's order).
    pub path: String,
    /// What kind.
    pub kind: DiffKind,
    /// The original's value there.
    pub original: Option<Value>,
    /// The candidate's value there.
    pub candidate: Option<Value>,
}

fn pointer(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => format!("/{}", k.replace('~', "~0").replace('/', "~1")),
            Step::Index(i) => format!("/{i}"),
        })
        .collect()
}

/// How the two answers' clocks relate: a candidate timestamp `t` is
/// compared as `t − shift_ns` with the original's, and may differ by up to
/// `tolerance_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeWindow {
    /// How much later the candidate answered, ns.
    pub shift_ns: i64,
    /// Largest difference still equal, ns.
    pub tolerance_ns: i64,
}

impl TimeWindow {
    /// Timestamps equal within `tolerance_ns`, no shift.
    #[must_use]
    pub fn within(tolerance_ns: i64) -> Self {
        Self {
            shift_ns: 0,
            tolerance_ns,
        }
    }

    /// The window for two exchanges: the candidate's is shifted by the
    /// difference of their arrivals, and a timestamp taken anywhere during
    /// either exchange (TrueTime windows included) is equal.
    #[must_use]
    pub fn between(original: &Exchange, candidate: (Interval, Interval)) -> Self {
        let span = |started: &Interval, finished: &Interval| {
            finished
                .latest_ns
                .saturating_sub(started.earliest_ns)
                .max(0)
        };
        Self {
            shift_ns: candidate
                .0
                .earliest_ns
                .saturating_sub(original.started.earliest_ns),
            tolerance_ns: span(&original.started, &original.finished)
                .saturating_add(span(&candidate.0, &candidate.1)),
        }
    }
}

struct Differ<'a> {
    rules: &'a Rules,
    window: TimeWindow,
    out: Vec<Difference>,
}

impl Differ<'_> {
    fn push(&mut self, path: &[Step], kind: DiffKind, a: Option<&Value>, b: Option<&Value>) {
        self.out.push(Difference {
            path: pointer(path),
            kind,
            original: a.cloned(),
            candidate: b.cloned(),
        });
    }

    fn compare(&mut self, path: &mut Vec<Step>, a: &Value, b: &Value) {
        let rules = self.rules;
        if Rules::any(&rules.ignore, path) {
            return;
        }
        if Rules::any(&rules.ids, path) {
            if std::mem::discriminant(a) != std::mem::discriminant(b) {
                self.push(path, DiffKind::Type, Some(a), Some(b));
            }
            return;
        }
        if Rules::any(&rules.timestamps, path)
            && let (Some(x), Some(y)) = (a.as_i64(), b.as_i64())
        {
            // The same value (copied from the request), or taken at the
            // corresponding moment of the candidate's exchange.
            if x != y
                && x.abs_diff(y.saturating_sub(self.window.shift_ns))
                    > self.window.tolerance_ns.unsigned_abs()
            {
                self.push(path, DiffKind::Timestamp, Some(a), Some(b));
            }
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    path.push(Step::Key(k.clone()));
                    match y.get(k) {
                        Some(vb) => self.compare(path, va, vb),
                        None if !Rules::any(&rules.ignore, path) => {
                            self.push(path, DiffKind::Missing, Some(va), None);
                        }
                        None => {}
                    }
                    path.pop();
                }
                for (k, vb) in y.iter().filter(|(k, _)| !x.contains_key(*k)) {
                    path.push(Step::Key(k.clone()));
                    if !Rules::any(&rules.ignore, path) {
                        self.push(path, DiffKind::Extra, None, Some(vb));
                    }
                    path.pop();
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                let (x, y) = if Rules::any(&rules.unordered, path) {
                    (self.sorted(path, x), self.sorted(path, y))
                } else {
                    (x.iter().collect(), y.iter().collect())
                };
                for i in 0..x.len().max(y.len()) {
                    path.push(Step::Index(i));
                    match (x.get(i), y.get(i)) {
                        (Some(va), Some(vb)) => self.compare(path, va, vb),
                        (Some(va), None) => self.push(path, DiffKind::Missing, Some(va), None),
                        (None, Some(vb)) => self.push(path, DiffKind::Extra, None, Some(vb)),
                        (None, None) => {}
                    }
                    path.pop();
                }
            }
            (Value::Number(x), Value::Number(y)) => {
                let equal = match (x.as_i64(), y.as_i64(), x.as_u64(), y.as_u64()) {
                    (Some(i), Some(j), _, _) => i == j,
                    (_, _, Some(i), Some(j)) => i == j,
                    _ => {
                        let (f, g) = (
                            x.as_f64().unwrap_or(f64::NAN),
                            y.as_f64().unwrap_or(f64::NAN),
                        );
                        f == g || (f - g).abs() <= rules.float_tolerance * f.abs().max(g.abs())
                    }
                };
                if !equal {
                    self.push(path, DiffKind::Value, Some(a), Some(b));
                }
            }
            _ if std::mem::discriminant(a) != std::mem::discriminant(b) => {
                self.push(path, DiffKind::Type, Some(a), Some(b));
            }
            _ if a != b => self.push(path, DiffKind::Value, Some(a), Some(b)),
            _ => {}
        }
    }

    /// The elements ordered by their content with ids, timestamps and
    /// ignored fields masked (so equal elements pair up whatever their order).
    fn sorted<'v>(&self, path: &mut Vec<Step>, items: &'v [Value]) -> Vec<&'v Value> {
        let mut keyed: Vec<(String, &Value)> = items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                path.push(Step::Index(i));
                let key = self.masked(path, v).to_string();
                path.pop();
                (key, v)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0));
        keyed.into_iter().map(|(_, v)| v).collect()
    }

    /// `v` with ignored, id and timestamp places replaced by placeholders.
    fn masked(&self, path: &mut Vec<Step>, v: &Value) -> Value {
        let rules = self.rules;
        if Rules::any(&rules.ignore, path) {
            return Value::Null;
        }
        if Rules::any(&rules.ids, path) || Rules::any(&rules.timestamps, path) {
            return Value::String("\u{0}masked".into());
        }
        match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, x)| {
                        path.push(Step::Key(k.clone()));
                        let m = self.masked(path, x);
                        path.pop();
                        (k.clone(), m)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| {
                        path.push(Step::Index(i));
                        let m = self.masked(path, x);
                        path.pop();
                        m
                    })
                    .collect(),
            ),
            other => other.clone(),
        }
    }
}

/// The differences between `original` and `candidate` under `rules`;
/// timestamps are compared within `window`.
#[must_use]
pub fn diff(
    original: &Value,
    candidate: &Value,
    rules: &Rules,
    window: TimeWindow,
) -> Vec<Difference> {
    let mut d = Differ {
        rules,
        window,
        out: Vec::new(),
    };
    d.compare(&mut Vec::new(), original, candidate);
    d.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules::from_json(
            r#"{"timestamps": ["/changes/*/stored/*", "/now_ns"], "ids": ["/changes/*/id", "/request_id"],
                "unordered": ["/changes", "/tags"], "ignore": ["/took_ms"], "float_tolerance": 1e-9}"#,
        )
        .unwrap()
    }

    fn original() -> Value {
        json!({
            "request_id": "r-1", "now_ns": 1_000_000, "took_ms": 3, "ratio": 0.1,
            "tags": ["a", "b", "c"],
            "changes": [
                {"id": 7, "type": "new-episode", "stored": [100, 200]},
                {"id": 8, "type": "my-list", "stored": [300, 400]},
            ],
        })
    }

    #[test]
    fn noise_is_not_a_difference() {
        let candidate = json!({
            "request_id": "r-2", "now_ns": 1_000_400, "took_ms": 99, "ratio": 0.1 + 1e-12,
            "tags": ["c", "a", "b"],
            "changes": [
                {"id": 18, "type": "my-list", "stored": [310, 410]},
                {"id": 17, "type": "new-episode", "stored": [90, 210]},
            ],
        });
        assert_eq!(
            diff(&original(), &candidate, &rules(), TimeWindow::within(500)),
            []
        );
    }

    #[test]
    fn real_changes_are_found_with_their_paths() {
        let mut c = original();
        c["changes"][1]["type"] = json!("live-event");
        c["now_ns"] = json!(1_002_000);
        c["tags"] = json!(["a", "b"]);
        c["request_id"] = json!(5);
        c["extra"] = json!(true);
        let d = diff(&original(), &c, &rules(), TimeWindow::within(500));
        let got: Vec<(String, DiffKind)> = d.iter().map(|x| (x.path.clone(), x.kind)).collect();
        assert!(
            got.contains(&("/now_ns".into(), DiffKind::Timestamp)),
            "{got:?}"
        );
        assert!(
            got.contains(&("/request_id".into(), DiffKind::Type)),
            "{got:?}"
        );
        assert!(got.contains(&("/extra".into(), DiffKind::Extra)), "{got:?}");
        assert!(
            got.iter()
                .any(|(p, k)| p.starts_with("/tags/") && *k == DiffKind::Missing),
            "{got:?}"
        );
        assert!(
            got.iter().any(|(p, _)| p.starts_with("/changes/")),
            "{got:?}"
        );
        assert_eq!(
            diff(
                &json!(1),
                &json!(1.5),
                &Rules::default(),
                TimeWindow::within(0)
            )
            .len(),
            1
        );
        assert_eq!(
            diff(
                &json!({"a": 1}),
                &json!({}),
                &Rules::default(),
                TimeWindow::within(0)
            )[0]
            .kind,
            DiffKind::Missing
        );
    }

    #[test]
    fn bad_rules_are_refused() {
        assert!(matches!(
            Rules::from_json(r#"{"ids": ["no-slash"]}"#),
            Err(RulesError::Pattern(_))
        ));
        assert!(matches!(
            Rules::from_json(r#"{"idz": []}"#),
            Err(RulesError::Syntax(_))
        ));
        assert!(matches!(
            Rules::from_json(r#"{"float_tolerance": -1}"#),
            Err(RulesError::Tolerance)
        ));
        assert!(matches!(
            Rules::from_json("nope"),
            Err(RulesError::Syntax(_))
        ));
        assert_eq!(
            Pattern::parse("/a~1b/*").unwrap().0,
            vec![Some("a/b".into()), None]
        );
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,6}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            Just(Value::Null),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn timestamps_compare_relative_to_each_exchange() {
        let rules = Rules::from_json(r#"{"timestamps": ["/as_of"]}"#).unwrap();
        let original = Exchange {
            started: Interval {
                earliest_ns: 1_000,
                latest_ns: 1_100,
            },
            finished: Interval {
                earliest_ns: 1_400,
                latest_ns: 1_500,
            },
            ..Exchange::default()
        };
        // The candidate answered an hour later, its exchange took 300 ns.
        let hour = 3_600_000_000_000;
        let cand = (
            Interval {
                earliest_ns: hour + 1_000,
                latest_ns: hour + 1_100,
            },
            Interval {
                earliest_ns: hour + 1_200,
                latest_ns: hour + 1_300,
            },
        );
        let w = TimeWindow::between(&original, cand);
        assert_eq!(
            w,
            TimeWindow {
                shift_ns: hour,
                tolerance_ns: 500 + 300
            }
        );
        let same = diff(
            &json!({"as_of": 1_200}),
            &json!({"as_of": hour + 1_250}),
            &rules,
            w,
        );
        assert_eq!(same, []);
        // A timestamp the request carried comes back unchanged.
        assert_eq!(
            diff(&json!({"as_of": 7}), &json!({"as_of": 7}), &rules, w),
            []
        );
        let late = diff(
            &json!({"as_of": 1_200}),
            &json!({"as_of": hour + 3_000}),
            &rules,
            w,
        );
        assert_eq!(late[0].kind, DiffKind::Timestamp);
    }

    proptest! {
        #[test]
        fn a_value_equals_itself(v in value()) {
            prop_assert_eq!(diff(&v, &v, &Rules::default(), TimeWindow::within(0)), vec![]);
        }

        #[test]
        fn any_changed_leaf_is_found(v in value(), replacement in leaf()) {
            // Change the first leaf found (depth first) to `replacement`.
            fn change(v: &mut Value, r: &Value) -> bool {
                match v {
                    Value::Object(o) => o.values_mut().any(|x| change(x, r)),
                    Value::Array(a) => a.iter_mut().any(|x| change(x, r)),
                    leaf => {
                        if leaf == r { return false; }
                        *leaf = r.clone();
                        true
                    }
                }
            }
            let mut c = v.clone();
            if change(&mut c, &replacement) {
                prop_assert!(!diff(&v, &c, &Rules::default(), TimeWindow::within(0)).is_empty());
            }
        }

        #[test]
        fn unordered_arrays_ignore_order(items in proptest::collection::vec(leaf(), 0..8), seed in any::<u64>()) {
            let mut shuffled = items.clone();
            let n = shuffled.len();
            for i in 0..n {
                shuffled.swap(i, (seed.wrapping_mul(i as u64 + 7) % n.max(1) as u64) as usize);
            }
            let rules = Rules::from_json(r#"{"unordered": ["/x"]}"#).unwrap();
            prop_assert_eq!(diff(&json!({"x": items}), &json!({"x": shuffled}), &rules, TimeWindow::within(0)), vec![]);
        }
    }
}
