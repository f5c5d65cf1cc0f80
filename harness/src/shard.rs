//! Shards of the suite: `--shard I/N` (or `CRLAB_SHARD=I/N`) runs the trials whose scenario
//! name hashes to shard I of N, so N machines can share the catalog.
//!
//! The shard of a trial is SHA-256 of its scenario's name, first 8 bytes as a big-endian
//! integer, modulo N: stable under added or removed scenarios (nothing else moves) and under
//! reordering, and the same on every machine. A scenario's trials (`crlab::NAME`,
//! `criu::NAME`) hash alike and run in one shard, so criu's row is still compared with
//! crlab's in the shard's own table. The union of shards 1..N is the whole catalog, each
//! trial in exactly one; the sizes are as even as the hash makes them, not equal.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// The environment variable `cargo xtask vm-test --shard I/N` sets.
pub const ENV: &str = "CRLAB_SHARD";

/// Shard `index` of `count` (1-based, as written: `1/3`..`3/3`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    #[error("shard {text:?} is not I/N: write it as 1/3 (shard 1 of 3)")]
    Syntax { text: String },
    #[error("shard {text:?}: the count must be at least 1: write it as 1/3 (shard 1 of 3)")]
    NoShards { text: String },
    #[error("shard {text:?}: shards are numbered 1 to {count}: use 1/{count} to {count}/{count}")]
    OutOfRange { text: String, count: u32 },
    #[error("--shard needs a value: I/N, for example --shard 1/3")]
    MissingValue,
}

impl Shard {
    /// The whole catalog: one shard of one.
    pub const WHOLE: Shard = Shard { index: 1, count: 1 };

    /// `I/N`, with 1 <= I <= N.
    pub fn parse(text: &str) -> Result<Shard, ShardError> {
        let syntax = || ShardError::Syntax {
            text: text.to_string(),
        };
        let (i, n) = text.trim().split_once('/').ok_or_else(syntax)?;
        let index: u32 = i.trim().parse().map_err(|_| syntax())?;
        let count: u32 = n.trim().parse().map_err(|_| syntax())?;
        if count == 0 {
            return Err(ShardError::NoShards {
                text: text.to_string(),
            });
        }
        if index == 0 || index > count {
            return Err(ShardError::OutOfRange {
                text: text.to_string(),
                count,
            });
        }
        Ok(Shard { index, count })
    }

    /// Every shard of `count`: `1/count`..`count/count`.
    pub fn all(count: u32) -> impl Iterator<Item = Shard> {
        (1..=count).map(move |index| Shard { index, count })
    }

    /// The shard of `count` that the trial `name` (`crlab::NAME`, `criu::NAME`, or a bare
    /// scenario name) belongs to.
    pub fn of(name: &str, count: u32) -> Shard {
        let count = count.max(1);
        let digest = Sha256::digest(scenario_of(name).as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        let index = u64::from_be_bytes(first) % u64::from(count);
        Shard {
            // The remainder is below count, a u32.
            index: u32::try_from(index).unwrap_or(0) + 1,
            count,
        }
    }

    /// Whether the trial `name` runs in this shard.
    pub fn contains(&self, name: &str) -> bool {
        Shard::of(name, self.count) == *self
    }
}

/// The scenario's name in a trial's name: what comes after the backend's `::`.
fn scenario_of(name: &str) -> &str {
    name.rsplit_once("::").map_or(name, |(_, s)| s)
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// Takes `--shard I/N` (or `--shard=I/N`) out of the suite's arguments, which libtest-mimic
/// would refuse; without it, `CRLAB_SHARD` (`env`) names the shard. `None`: the whole catalog.
pub fn take_from_args(
    args: Vec<String>,
    env: Option<String>,
) -> Result<(Vec<String>, Option<Shard>), ShardError> {
    let mut rest = Vec::with_capacity(args.len());
    let mut value: Option<String> = None;
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--shard" {
            value = Some(it.next().ok_or(ShardError::MissingValue)?);
        } else if let Some(v) = a.strip_prefix("--shard=") {
            value = Some(v.to_string());
        } else {
            rest.push(a);
        }
    }
    let value = value.or(env.filter(|e| !e.trim().is_empty()));
    let shard = value.as_deref().map(Shard::parse).transpose()?;
    Ok((rest, shard))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn real_trial_names() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let catalog = crate::scenario::load(&root.join("scenarios/catalog")).expect("the catalog");
        assert!(
            catalog.len() >= 10,
            "the catalog has {} scenarios",
            catalog.len()
        );
        catalog
            .iter()
            .flat_map(|s| crate::trial::Backend::ALL.map(|b| format!("{}::{}", b.name(), s.name)))
            .collect()
    }

    fn synthetic_names() -> Vec<String> {
        (0..500)
            .flat_map(|i| ["crlab", "criu"].map(move |b| format!("{b}::synthetic-scenario-{i:03}")))
            .collect()
    }

    /// Every trial is in exactly one shard of `count`, and the shards together hold them all.
    fn assert_partition(names: &[String], count: u32) -> BTreeMap<u32, usize> {
        let mut sizes = BTreeMap::new();
        for name in names {
            let holders: Vec<Shard> = Shard::all(count).filter(|s| s.contains(name)).collect();
            assert_eq!(holders.len(), 1, "{name} is in {holders:?} of {count}");
            assert_eq!(holders[0], Shard::of(name, count));
            *sizes.entry(holders[0].index).or_insert(0) += 1;
        }
        assert_eq!(sizes.values().sum::<usize>(), names.len());
        sizes
    }

    #[test]
    fn the_shards_of_the_real_catalog_partition_it_for_1_to_5() {
        let names = real_trial_names();
        for count in 1..=5 {
            assert_partition(&names, count);
        }
        // One shard of one is the whole catalog.
        assert!(names.iter().all(|n| Shard::WHOLE.contains(n)));
    }

    #[test]
    fn the_shards_of_synthetic_names_partition_them_and_none_is_empty() {
        let names = synthetic_names();
        for count in 1..=5 {
            let sizes = assert_partition(&names, count);
            assert_eq!(
                sizes.len(),
                count as usize,
                "an empty shard of {count}: {sizes:?}"
            );
            // 1000 trials (500 scenarios): each shard within 30% of an even share.
            let even = names.len() / count as usize;
            for (i, n) in &sizes {
                assert!(
                    n.abs_diff(even) * 10 <= even * 3,
                    "shard {i}/{count}: {n} of {even}"
                );
            }
        }
    }

    #[test]
    fn a_scenarios_trials_share_a_shard_and_the_hash_is_stable() {
        for count in 1..=5 {
            for name in real_trial_names() {
                let scenario = scenario_of(&name);
                assert_eq!(Shard::of(&name, count), Shard::of(scenario, count));
            }
        }
        // SHA-256 is fixed: these do not change between builds, machines or versions
        // (python3: int.from_bytes(hashlib.sha256(b"container-1-thread").digest()[:8],
        // "big") % 3 + 1 == 1); pinned so that a change of the hashing is seen.
        let pinned: Vec<String> = ["container-1-thread", "crlab::systemd-service", "x"]
            .iter()
            .map(|n| Shard::of(n, 3).to_string())
            .collect();
        assert_eq!(pinned, ["1/3", "3/3", "1/3"]);
        // Adding a scenario moves no other one.
        let before: Vec<Shard> = synthetic_names().iter().map(|n| Shard::of(n, 4)).collect();
        let mut more = synthetic_names();
        more.insert(0, "crlab::a-new-scenario".into());
        let after: Vec<Shard> = more[1..].iter().map(|n| Shard::of(n, 4)).collect();
        assert_eq!(before, after);
    }

    #[test]
    fn bad_values_say_how_to_write_one() {
        assert_eq!(Shard::parse("2/3"), Ok(Shard { index: 2, count: 3 }));
        assert_eq!(Shard::parse(" 1/1 "), Ok(Shard::WHOLE));
        for (text, says) in [
            ("0/3", "numbered 1 to 3: use 1/3 to 3/3"),
            ("4/3", "numbered 1 to 3: use 1/3 to 3/3"),
            ("1/0", "the count must be at least 1"),
            ("x", "is not I/N: write it as 1/3"),
            ("1/x", "is not I/N"),
            ("-1/3", "is not I/N"),
            ("", "is not I/N"),
            ("1/3/5", "is not I/N"),
        ] {
            let e = Shard::parse(text).expect_err(text).to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
    }

    #[test]
    fn the_shard_comes_from_the_arguments_or_the_environment() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (rest, shard) =
            take_from_args(args(&["--list", "--shard", "2/3", "container"]), None).unwrap();
        assert_eq!(rest, ["--list", "container"]);
        assert_eq!(shard, Some(Shard { index: 2, count: 3 }));
        let (_, shard) = take_from_args(args(&["--shard=3/3"]), Some("1/3".into())).unwrap();
        assert_eq!(shard, Some(Shard { index: 3, count: 3 }));
        let (rest, shard) = take_from_args(args(&["--exact"]), Some("1/2".into())).unwrap();
        assert_eq!((rest.len(), shard), (1, Some(Shard { index: 1, count: 2 })));
        assert_eq!(take_from_args(args(&[]), Some(" ".into())).unwrap().1, None);
        assert_eq!(
            take_from_args(args(&["--shard"]), None),
            Err(ShardError::MissingValue)
        );
        assert!(take_from_args(args(&[]), Some("4/3".into())).is_err());
    }
}
