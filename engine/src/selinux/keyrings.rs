//! What SELinux must allow for a restore to make a process's session keyring again (see
//! `restore::keyring`): the engine, in its own context, labels it and each key
//! (`attr/keycreate`), fills it and gives owners and permissions; once in its restored
//! context, the process must still be able to find and read them.

use std::fmt;

use super::descriptors::first_denied;
use super::{AccessOracle, Question, SelinuxError};
use crate::image::schema::SessionKeyring;

/// A session keyring as the restore makes it: its labels once relabelled to the process's
/// restored context where they were its dumped one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringCreation {
    /// The process that joins it (its image pid).
    pub pid: i32,
    /// The keyring's serial at dump, which names it.
    pub serial: i32,
    /// The keyring's label and its keys', as the restore gives them.
    pub label: String,
    pub key_labels: Vec<String>,
    /// The context the process is restored in.
    pub target: String,
}

/// How the labels of a process's keyring and keys come back: a label that was the process's
/// own context at the dump becomes the context the restore gives it (`--lsm-profile`), as a
/// runtime makes a container's keyring under the container's context; any other is kept.
#[derive(Debug, Clone, Copy)]
pub struct Relabel<'a> {
    /// The process's context at the dump.
    pub dumped: &'a str,
    /// The context the restore gives it.
    pub target: &'a str,
}

impl<'a> Relabel<'a> {
    /// The label `label` comes back with.
    pub fn of(self, label: &'a str) -> &'a str {
        if label == self.dumped && !self.target.is_empty() {
            self.target
        } else {
            label
        }
    }
}

impl KeyringCreation {
    /// The keyring of process `pid` as `relabel` gives it back; `None` without one or without
    /// labels (SELinux was off at the dump).
    pub fn of(pid: i32, ring: Option<&SessionKeyring>, relabel: Relabel<'_>) -> Option<Self> {
        let ring = ring.filter(|r| !r.label.is_empty())?;
        Some(KeyringCreation {
            pid,
            serial: ring.serial,
            label: relabel.of(&ring.label).to_owned(),
            key_labels: ring
                .keys
                .iter()
                .filter(|k| !k.label.is_empty())
                .map(|k| relabel.of(&k.label).to_owned())
                .collect(),
            target: relabel.target.to_owned(),
        })
    }
}

impl KeyringCreation {
    /// The same keyring for its process restored in `target` instead: labels that were its
    /// context (`self.target`) follow it.
    pub fn moved_to(&self, target: &str) -> KeyringCreation {
        let relabel = Relabel {
            dumped: &self.target,
            target,
        };
        KeyringCreation {
            pid: self.pid,
            serial: self.serial,
            label: relabel.of(&self.label).to_owned(),
            key_labels: self
                .key_labels
                .iter()
                .map(|l| relabel.of(l).to_owned())
                .collect(),
            target: target.to_owned(),
        }
    }
}

/// The engine's `process { setkeycreate }` on itself; on the keyring's label, `key { create
/// write setattr view search }` (labelled, filled with `add_key`, owned, described, joined by
/// name by the processes that share it); on each key's, `key { create setattr view }`; and
/// the restored process's `key { view read search }` on its keyring and `key { view read }`
/// on each key (what the restore's check of them, and the process itself, do).
pub fn keyring_questions(engine: &str, k: &KeyringCreation) -> Vec<Question> {
    let q = |source: &str, target: &str, permissions: Vec<&'static str>| Question {
        source: source.to_owned(),
        target: target.to_owned(),
        class: "key",
        permissions,
    };
    let mut out = vec![Question {
        source: engine.to_owned(),
        target: engine.to_owned(),
        class: "process",
        permissions: vec!["setkeycreate"],
    }];
    out.push(q(
        engine,
        &k.label,
        vec!["create", "write", "setattr", "view", "search"],
    ));
    for l in &k.key_labels {
        out.push(q(engine, l, vec!["create", "setattr", "view"]));
    }
    out.push(q(&k.target, &k.label, vec!["view", "read", "search"]));
    for l in &k.key_labels {
        out.push(q(&k.target, l, vec!["view", "read"]));
    }
    out
}

/// A session keyring the restore could not make again, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyringRefusal {
    pub pid: i32,
    pub serial: i32,
    pub question: Question,
}

impl fmt::Display for KeyringRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the session keyring {} of process {}: {}",
            self.serial,
            self.pid,
            self.question.denial()
        )
    }
}

/// The first keyring of `keyrings` SELinux would not let the restore make again (the engine
/// in `engine`), or `None`. Asks the kernel through `oracle`; nothing is audited.
pub fn keyring_refusal(
    oracle: &dyn AccessOracle,
    engine: &str,
    keyrings: &[KeyringCreation],
) -> Result<Option<KeyringRefusal>, SelinuxError> {
    for k in keyrings {
        if let Some(question) = first_denied(oracle, keyring_questions(engine, k))? {
            return Ok(Some(KeyringRefusal {
                pid: k.pid,
                serial: k.serial,
                question,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::schema::UserKey;
    use crate::selinux::examples::{CONTAINER, UNCONFINED};

    fn ring(label: &str) -> SessionKeyring {
        SessionKeyring {
            serial: 7,
            label: label.into(),
            keys: vec![UserKey {
                label: label.into(),
                ..UserKey::default()
            }],
            ..SessionKeyring::default()
        }
    }

    #[test]
    fn labels_of_the_dumped_context_follow_the_process_and_others_stay() {
        let moved = "system_u:system_r:container_t:s0:c5,c6";
        let to = |target| Relabel {
            dumped: CONTAINER,
            target,
        };
        let k = KeyringCreation::of(1, Some(&ring(CONTAINER)), to(moved)).expect("one");
        assert_eq!((k.label.as_str(), k.key_labels[0].as_str()), (moved, moved));
        let other = "system_u:system_r:init_t:s0";
        let k = KeyringCreation::of(1, Some(&ring(other)), to(moved)).expect("one");
        assert_eq!(k.label, other);
        assert!(KeyringCreation::of(1, Some(&ring("")), to(moved)).is_none());
        assert!(KeyringCreation::of(1, None, to(moved)).is_none());
    }

    #[test]
    fn the_engine_labels_and_fills_and_the_process_reads() {
        let same = Relabel {
            dumped: CONTAINER,
            target: CONTAINER,
        };
        let k = KeyringCreation::of(1, Some(&ring(CONTAINER)), same).expect("one");
        let questions = keyring_questions(UNCONFINED, &k);
        let asked: Vec<(&str, &str, &str, Vec<&str>)> = questions
            .iter()
            .map(|q| {
                (
                    q.source.as_str(),
                    q.target.as_str(),
                    q.class,
                    q.permissions.clone(),
                )
            })
            .collect();
        assert_eq!(
            asked[0],
            (UNCONFINED, UNCONFINED, "process", vec!["setkeycreate"])
        );
        assert_eq!(
            asked[1],
            (
                UNCONFINED,
                CONTAINER,
                "key",
                vec!["create", "write", "setattr", "view", "search"]
            )
        );
        assert_eq!(
            asked[2],
            (
                UNCONFINED,
                CONTAINER,
                "key",
                vec!["create", "setattr", "view"]
            )
        );
        assert_eq!(
            asked[3],
            (CONTAINER, CONTAINER, "key", vec!["view", "read", "search"])
        );
        assert_eq!(
            asked[4],
            (CONTAINER, CONTAINER, "key", vec!["view", "read"])
        );
    }
}
