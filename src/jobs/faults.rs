//! Fault injection: rules that make jobs of a deployed app slow, failed, lost or refused,
//! decided once per job at submit time from a seeded PRNG (so a run is reproducible).
//!
//! Rules come from the seed (`foundry.compute_modules.faults[]`) or `PUT /_emulate/faults`,
//! in the seed's snake_case keys. The first rule that matches a job (and has jobs left under
//! `max_jobs`) applies to it; its rolls are taken in a fixed order: reject, fail, drop, then
//! the delay.

use std::time::Duration;

use serde_json::{json, Map, Value};

/// The PRNG seed when `--fault-seed` is not given.
pub const DEFAULT_SEED: u64 = 1;

/// One rule, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub deployed_app_rid: String,
    pub branch: Option<String>,
    pub query_type: Option<String>,
    /// Milliseconds before the job is handed out: fixed, or uniform in `[min, max]`.
    pub delay_ms: Option<(u64, u64)>,
    pub fail_rate: Option<f64>,
    pub fail_message: Option<String>,
    pub drop_rate: Option<f64>,
    pub reject_rate: Option<f64>,
    /// The rule applies to the next this many matching jobs, then no more.
    pub max_jobs: Option<u64>,
}

const KEYS: [&str; 9] = [
    "deployed_app_rid",
    "branch",
    "query_type",
    "delay_ms",
    "fail_rate",
    "fail_message",
    "drop_rate",
    "reject_rate",
    "max_jobs",
];

impl FaultRule {
    /// Parses one rule; the error names the field (`what` says which rule, e.g. `faults[2]`).
    pub fn parse(value: &Value, what: &str) -> Result<FaultRule, String> {
        let map = value
            .as_object()
            .ok_or_else(|| format!("{what} must be an object."))?;
        if let Some(key) = map.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(format!(
                "{what} has an unknown key '{key}' (known: {}).",
                KEYS.join(", ")
            ));
        }
        let text = |key: &str| -> Result<Option<String>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(format!("{what}.{key} must be a string.")),
            }
        };
        let rate = |key: &str| -> Result<Option<f64>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => match v.as_f64() {
                    Some(r) if (0.0..=1.0).contains(&r) => Ok(Some(r)),
                    _ => Err(format!("{what}.{key} must be a number from 0 to 1.")),
                },
            }
        };
        let millis = |v: &Value| v.as_u64();
        let delay_ms = match map.get("delay_ms") {
            None | Some(Value::Null) => None,
            Some(Value::Array(pair)) => match pair.as_slice() {
                [min, max] => match (millis(min), millis(max)) {
                    (Some(min), Some(max)) if min <= max => Some((min, max)),
                    _ => {
                        return Err(format!(
                            "{what}.delay_ms must be [min, max] with 0 <= min <= max milliseconds."
                        ))
                    }
                },
                _ => {
                    return Err(format!(
                        "{what}.delay_ms must be [min, max] with 0 <= min <= max milliseconds."
                    ))
                }
            },
            Some(v) => match millis(v) {
                Some(ms) => Some((ms, ms)),
                None => {
                    return Err(format!(
                    "{what}.delay_ms must be a non-negative number of milliseconds or [min, max]."
                ))
                }
            },
        };
        let max_jobs = match map.get("max_jobs") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| format!("{what}.max_jobs must be a non-negative integer."))?,
            ),
        };
        let deployed_app_rid = text("deployed_app_rid")?
            .filter(|rid| !rid.is_empty())
            .ok_or_else(|| format!("{what}.deployed_app_rid is required."))?;
        Ok(FaultRule {
            deployed_app_rid,
            branch: text("branch")?,
            query_type: text("query_type")?,
            delay_ms,
            fail_rate: rate("fail_rate")?,
            fail_message: text("fail_message")?,
            drop_rate: rate("drop_rate")?,
            reject_rate: rate("reject_rate")?,
            max_jobs,
        })
    }

    /// Parses `{"faults": [rule, ...]}` (the PUT body) or a bare list (the seed's).
    pub fn parse_list(value: &Value) -> Result<Vec<FaultRule>, String> {
        let list = match value {
            Value::Array(list) => list,
            Value::Object(map) => match map.get("faults") {
                Some(Value::Array(list)) if map.len() == 1 => list,
                _ => return Err("The body must be {\"faults\": [rule, ...]}.".to_string()),
            },
            _ => return Err("The body must be {\"faults\": [rule, ...]}.".to_string()),
        };
        list.iter()
            .enumerate()
            .map(|(n, rule)| FaultRule::parse(rule, &format!("faults[{n}]")))
            .collect()
    }

    /// The rule in its own keys (what `GET /_emulate/faults` answers).
    pub fn to_json(&self) -> Value {
        let mut map = Map::new();
        map.insert("deployed_app_rid".into(), json!(self.deployed_app_rid));
        let mut put = |key: &str, value: Value| {
            if !value.is_null() {
                map.insert(key.into(), value);
            }
        };
        put("branch", json!(self.branch));
        put("query_type", json!(self.query_type));
        put(
            "delay_ms",
            match self.delay_ms {
                None => Value::Null,
                Some((min, max)) if min == max => json!(min),
                Some((min, max)) => json!([min, max]),
            },
        );
        put("fail_rate", json!(self.fail_rate));
        put("fail_message", json!(self.fail_message));
        put("drop_rate", json!(self.drop_rate));
        put("reject_rate", json!(self.reject_rate));
        put("max_jobs", json!(self.max_jobs));
        Value::Object(map)
    }

    fn matches(&self, rid: &str, branch: &str, query_type: &str) -> bool {
        self.deployed_app_rid == rid
            && self.branch.as_deref().is_none_or(|b| b == branch)
            && self.query_type.as_deref().is_none_or(|q| q == query_type)
    }
}

/// What a rule does to one job; the text says which rule, for inspection and listings.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    None,
    /// The submit answers 503; nothing is created.
    Reject(String),
    /// The job fails at once with this message, never reaching the runtime.
    Fail {
        rule: String,
        message: String,
    },
    /// The job is never handed out.
    Drop(String),
    /// The job is handed out this much later.
    Delay(Duration, String),
}

impl Effect {
    /// The effect's name in metrics (`foundry_emulator_faults_total{effect}`).
    pub fn name(&self) -> &'static str {
        match self {
            Effect::None => "none",
            Effect::Reject(_) => "reject",
            Effect::Fail { .. } => "fail",
            Effect::Drop(_) => "drop",
            Effect::Delay(..) => "delay",
        }
    }
}

/// The rules in force, how many jobs each has applied to, and the PRNG.
#[derive(Debug)]
pub struct Faults {
    rules: Vec<(FaultRule, u64)>,
    seed: u64,
    rng: SplitMix64,
}

impl Faults {
    pub fn new(seed: u64) -> Faults {
        Faults {
            rules: Vec::new(),
            seed,
            rng: SplitMix64(seed),
        }
    }

    /// Replaces the rules and restarts the PRNG from its seed, so the same rules give the
    /// same sequence of decisions.
    pub fn replace(&mut self, rules: Vec<FaultRule>) {
        self.rules = rules.into_iter().map(|rule| (rule, 0)).collect();
        self.rng = SplitMix64(self.seed);
    }

    pub fn rules(&self) -> Vec<FaultRule> {
        self.rules.iter().map(|(rule, _)| rule.clone()).collect()
    }

    /// Decides the fate of one job of `rid`/`branch`/`query_type`.
    pub fn decide(&mut self, rid: &str, branch: &str, query_type: &str) -> Effect {
        let Some(n) = self.rules.iter().position(|(rule, applied)| {
            rule.matches(rid, branch, query_type) && rule.max_jobs.is_none_or(|max| *applied < max)
        }) else {
            return Effect::None;
        };
        self.rules[n].1 += 1;
        let rule = self.rules[n].0.clone();
        let hit = |rate: Option<f64>, rng: &mut SplitMix64| rate.is_some_and(|r| rng.unit() < r);
        if hit(rule.reject_rate, &mut self.rng) {
            return Effect::Reject(format!("fault rule {n} rejected this submit"));
        }
        if hit(rule.fail_rate, &mut self.rng) {
            let message = rule
                .fail_message
                .unwrap_or_else(|| format!("Injected failure (fault rule {n})."));
            return Effect::Fail {
                rule: format!("fault rule {n}: failed"),
                message,
            };
        }
        if hit(rule.drop_rate, &mut self.rng) {
            return Effect::Drop(format!("fault rule {n}: dropped, never handed out"));
        }
        match rule.delay_ms {
            Some((min, max)) => {
                let ms = min + self.rng.below(max - min + 1);
                Effect::Delay(
                    Duration::from_millis(ms),
                    format!("fault rule {n}: delayed {ms} ms"),
                )
            }
            None => Effect::None,
        }
    }
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for coin flips.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [0, n) (n ≥ 1; the modulo bias is irrelevant at these sizes).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(value: Value) -> FaultRule {
        FaultRule::parse(&value, "faults[0]").unwrap()
    }

    #[test]
    fn rules_parse_and_print_in_their_own_keys() {
        let value =
            json!({"deployed_app_rid": "a", "delay_ms": [5, 9], "fail_rate": 0.5, "max_jobs": 2});
        assert_eq!(rule(value.clone()).to_json(), value);
        assert_eq!(
            rule(json!({"deployed_app_rid": "a", "delay_ms": 7})).delay_ms,
            Some((7, 7))
        );
    }

    #[test]
    fn bad_rules_name_their_field() {
        let err = |value: Value| FaultRule::parse(&value, "faults[1]").unwrap_err();
        assert_eq!(
            err(json!({"deployed_app_rid": "a", "fail_rat": 1})),
            "faults[1] has an unknown key 'fail_rat' (known: deployed_app_rid, branch, query_type, delay_ms, fail_rate, fail_message, drop_rate, reject_rate, max_jobs)."
        );
        assert_eq!(
            err(json!({"deployed_app_rid": "a", "drop_rate": 1.5})),
            "faults[1].drop_rate must be a number from 0 to 1."
        );
        assert_eq!(
            err(json!({"deployed_app_rid": "a", "delay_ms": -5})),
            "faults[1].delay_ms must be a non-negative number of milliseconds or [min, max]."
        );
        assert_eq!(
            err(json!({"branch": "x"})),
            "faults[1].deployed_app_rid is required."
        );
    }

    #[test]
    fn max_jobs_limits_a_rule_and_the_seed_repeats_the_sequence() {
        let mut faults = Faults::new(7);
        let rules = vec![rule(
            json!({"deployed_app_rid": "a", "fail_rate": 1, "max_jobs": 2}),
        )];
        faults.replace(rules.clone());
        let names: Vec<&str> = (0..4)
            .map(|_| faults.decide("a", "master", "q").name())
            .collect();
        assert_eq!(names, ["fail", "fail", "none", "none"]);
        assert_eq!(faults.decide("b", "master", "q"), Effect::None);

        let coin = vec![rule(
            json!({"deployed_app_rid": "a", "drop_rate": 0.5, "delay_ms": [0, 100]}),
        )];
        let run = |faults: &mut Faults| -> Vec<Effect> {
            faults.replace(coin.clone());
            (0..50).map(|_| faults.decide("a", "master", "q")).collect()
        };
        let first = run(&mut faults);
        assert_eq!(first, run(&mut faults), "the same seed, the same sequence");
        let drops = first.iter().filter(|e| e.name() == "drop").count();
        assert!((10..40).contains(&drops), "about half dropped: {drops}");
    }
}
