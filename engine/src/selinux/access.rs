//! The `process` permissions a context write needs, the kernel's decisions on them
//! ([`AccessOracle`], [`KernelOracle`]: `security_compute_av`, which audits nothing), and the
//! `allow` rules that would grant a denied one.
//!
//! When the restore writes a process's `attr/current` from inside it, while it still runs in
//! the engine's context and is traced by the engine, the kernel checks, in this order
//! (`selinux_setprocattr`): `process { setcurrent }` from the engine's context to itself; that
//! the target is a context the loaded policy knows (else `EINVAL`); `process { dyntransition }`
//! from the engine's context to the target; `process { ptrace }` from the tracer, the engine,
//! to the target.

use std::ffi::CString;
use std::io;

use super::{context_type, SelinuxError};

/// `SELINUX_AVD_FLAGS_PERMISSIVE` of `<selinux/selinux.h>`: the source domain is permissive.
const AVD_FLAGS_PERMISSIVE: u32 = 0x0001;

/// A permission of class `process` the restore needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcessPermission {
    Setcurrent,
    Dyntransition,
    Ptrace,
}

impl ProcessPermission {
    /// The permissions a context write needs, in the kernel's order of checking.
    pub const FOR_CONTEXT_WRITE: [ProcessPermission; 3] = [
        ProcessPermission::Setcurrent,
        ProcessPermission::Dyntransition,
        ProcessPermission::Ptrace,
    ];

    /// The permission's name in the policy.
    pub fn name(self) -> &'static str {
        match self {
            ProcessPermission::Setcurrent => "setcurrent",
            ProcessPermission::Dyntransition => "dyntransition",
            ProcessPermission::Ptrace => "ptrace",
        }
    }
}

/// The kernel's answer for one permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The policy grants it.
    pub allowed: bool,
    /// A denial would not be enforced: SELinux is permissive, or the source domain is.
    pub permissive: bool,
}

impl Decision {
    /// The kernel lets the operation through (granted, or denied but not enforced).
    pub fn passes(self) -> bool {
        self.allowed || self.permissive
    }
}

/// What the engine asks the kernel about a context write.
pub trait AccessOracle {
    /// Whether the loaded policy knows `context` (`Ok(false)`: the kernel says `EINVAL`).
    fn context_is_valid(&self, context: &str) -> Result<bool, SelinuxError>;
    /// The kernel's decision on `process { permission }` from `source` to `target`.
    fn decide(
        &self,
        source: &str,
        target: &str,
        permission: ProcessPermission,
    ) -> Result<Decision, SelinuxError>;
}

/// [`AccessOracle`] through libselinux: `security_compute_av_flags` (no audit record) and
/// `security_canonicalize_context` (the kernel's context check, as `security_check_context`,
/// keeping the errno that tells an unknown context from a refused question).
pub struct KernelOracle {
    class: ::selinux::SecurityClass,
    enforcing: bool,
}

impl KernelOracle {
    /// Looks up class `process` in the loaded policy and notes the enforcing mode.
    pub fn new() -> Result<KernelOracle, SelinuxError> {
        let class = ::selinux::SecurityClass::from_name("process").map_err(|source| {
            SelinuxError::Mapping {
                what: "class `process`".into(),
                source,
            }
        })?;
        Ok(KernelOracle {
            class,
            enforcing: matches!(::selinux::current_mode(), ::selinux::SELinuxMode::Enforcing),
        })
    }

    /// SELinux enforces its decisions (not permissive).
    pub fn enforcing(&self) -> bool {
        self.enforcing
    }
}

/// The OS error number behind a libselinux error, if any.
fn errno_of(e: &::selinux::errors::Error) -> Option<i32> {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .and_then(io::Error::raw_os_error)
}

impl AccessOracle for KernelOracle {
    fn context_is_valid(&self, context: &str) -> Result<bool, SelinuxError> {
        let Ok(c) = CString::new(context) else {
            return Ok(false);
        };
        let canonical = ::selinux::SecurityContext::from_c_str(&c, true).canonicalize();
        match canonical {
            Ok(_) => Ok(true),
            Err(e) if errno_of(&e) == Some(libc::EINVAL) => Ok(false),
            Err(source) => Err(SelinuxError::CheckContext {
                context: context.to_owned(),
                source,
            }),
        }
    }

    fn decide(
        &self,
        source: &str,
        target: &str,
        permission: ProcessPermission,
    ) -> Result<Decision, SelinuxError> {
        let bit = self
            .class
            .access_vector_bit(permission.name())
            .map_err(|source| SelinuxError::Mapping {
                what: format!("permission `process {{ {} }}`", permission.name()),
                source,
            })?;
        let failed = |e| SelinuxError::ComputeAv {
            source_context: source.to_owned(),
            target_context: target.to_owned(),
            permission: permission.name(),
            source: e,
        };
        let c_string = |context: &str| {
            CString::new(context).map_err(|_| SelinuxError::NulInContext {
                context: context.to_owned(),
            })
        };
        let (s, t) = (c_string(source)?, c_string(target)?);
        let avd = ::selinux::SecurityContext::from_c_str(&s, true)
            .query_access_decision(
                &::selinux::SecurityContext::from_c_str(&t, true),
                self.class,
                bit,
            )
            .map_err(failed)?;
        Ok(Decision {
            allowed: avd.allowed & bit == bit,
            permissive: !self.enforcing || avd.flags & AVD_FLAGS_PERMISSIVE != 0,
        })
    }
}

/// The rules a policy needs so that `source` may give a process the context `target`, for the
/// `denied` permissions, as `audit2allow` writes them (`self` when both types are the same).
pub fn allow_rules(source: &str, target: &str, denied: &[ProcessPermission]) -> Vec<String> {
    let from = context_type(source);
    let to = context_type(target);
    let object = |t: &str| if t == from { "self" } else { t }.to_owned();
    // setcurrent is on the engine's own domain; the others are on the target.
    let mut rules: Vec<(String, Vec<&str>)> = Vec::new();
    for p in denied {
        let obj = match p {
            ProcessPermission::Setcurrent => "self".to_owned(),
            _ => object(to),
        };
        match rules.iter_mut().find(|(o, _)| *o == obj) {
            Some((_, perms)) => perms.push(p.name()),
            None => rules.push((obj, vec![p.name()])),
        }
    }
    rules
        .into_iter()
        .map(|(obj, perms)| {
            let perms = match perms.as_slice() {
                [one] => (*one).to_owned(),
                many => format!("{{ {} }}", many.join(" ")),
            };
            format!("allow {from} {obj}:process {perms};")
        })
        .collect()
}

/// Why a context write from `from` to `to` was denied (`EACCES`), asked again of `oracle`
/// after the fact, without auditing: the denied permissions, named, and the rules that would
/// allow them. When the type rules allow it all (an MLS/MCS constraint refused the levels) or
/// the kernel cannot be asked (`oracle` is `None` or errs), what the write needs.
pub fn explain_denial(oracle: Option<&dyn AccessOracle>, from: &str, to: &str) -> (String, String) {
    let denied: Option<Vec<ProcessPermission>> = oracle.and_then(|oracle| {
        ProcessPermission::FOR_CONTEXT_WRITE
            .iter()
            .map(|&p| {
                let target = if p == ProcessPermission::Setcurrent {
                    from
                } else {
                    to
                };
                oracle.decide(from, target, p).map(|d| (p, d))
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .map(|d| {
                d.into_iter()
                    .filter(|(_, d)| !d.allowed)
                    .map(|(p, _)| p)
                    .collect()
            })
    });
    let (from_type, to_type) = (context_type(from), context_type(to));
    match denied {
        Some(denied) if !denied.is_empty() => {
            let names: Vec<String> = denied
                .iter()
                .map(|p| match p {
                    ProcessPermission::Setcurrent => format!("`process {{ setcurrent }}` of {from_type} on itself"),
                    ProcessPermission::Dyntransition => format!("`process {{ dyntransition }}` from {from_type} to {to_type}"),
                    ProcessPermission::Ptrace => format!("`process {{ ptrace }}` from {from_type} (the restored process's tracer) to {to_type}"),
                })
                .collect();
            (
                format!("the policy denies {}", names.join(" and ")),
                allow_rules(from, to, &denied).join(" "),
            )
        }
        _ => (
            format!(
                "the engine's domain needs `process {{ setcurrent }}` on itself and `process {{ dyntransition }}` \
                 from {from_type} to {to_type} (and, when the levels differ, the MLS/MCS constraints must allow them)"
            ),
            format!("allow {from_type} {to_type}:process dyntransition;"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::selinux::examples::{CONTAINER, CONTAINER2, SERVICE, UNCONFINED};

    #[test]
    fn allow_rules_are_written_as_audit2allow_would() {
        use ProcessPermission::*;
        assert_eq!(
            allow_rules(UNCONFINED, SERVICE, &[Dyntransition]),
            ["allow unconfined_t unconfined_service_t:process dyntransition;"]
        );
        assert_eq!(
            allow_rules(UNCONFINED, SERVICE, &[Setcurrent, Dyntransition, Ptrace]),
            [
                "allow unconfined_t self:process setcurrent;",
                "allow unconfined_t unconfined_service_t:process { dyntransition ptrace };",
            ]
        );
        // Same type, other level: the rule is on `self`.
        assert_eq!(
            allow_rules(CONTAINER, CONTAINER2, &[Dyntransition]),
            ["allow container_t self:process dyntransition;"]
        );
        assert!(allow_rules(UNCONFINED, SERVICE, &[]).is_empty());
    }

    /// Grants only `setcurrent`.
    struct OnlySetcurrent;

    impl AccessOracle for OnlySetcurrent {
        fn context_is_valid(&self, _: &str) -> Result<bool, SelinuxError> {
            Ok(true)
        }

        fn decide(
            &self,
            _: &str,
            _: &str,
            permission: ProcessPermission,
        ) -> Result<Decision, SelinuxError> {
            Ok(Decision {
                allowed: permission == ProcessPermission::Setcurrent,
                permissive: false,
            })
        }
    }

    #[test]
    fn a_denial_is_explained_with_its_rules() {
        let (why, rules) = explain_denial(Some(&OnlySetcurrent), UNCONFINED, SERVICE);
        assert_eq!(
            why,
            "the policy denies `process { dyntransition }` from unconfined_t to \
             unconfined_service_t and `process { ptrace }` from unconfined_t (the restored \
             process's tracer) to unconfined_service_t"
        );
        assert_eq!(
            rules,
            "allow unconfined_t unconfined_service_t:process { dyntransition ptrace };"
        );
        let (why, rules) = explain_denial(None, UNCONFINED, SERVICE);
        assert!(why.starts_with("the engine's domain needs"), "{why}");
        assert_eq!(
            rules,
            "allow unconfined_t unconfined_service_t:process dyntransition;"
        );
    }

    /// The real oracle errors, never panics, without SELinux; with it, the kernel knows the
    /// calling process's context and answers about it.
    #[test]
    fn the_kernel_oracle_answers_or_errors() {
        if !super::super::enabled() {
            assert!(
                KernelOracle::new().is_err(),
                "no class `process` without SELinux"
            );
            return;
        }
        let oracle = KernelOracle::new().expect("class `process` is known");
        let own = super::super::own_context().expect("our own context");
        assert_eq!(oracle.context_is_valid(&own).ok(), Some(true));
        assert_eq!(
            oracle
                .context_is_valid("no_such_user:no_such_role:no_such_t:s0")
                .ok(),
            Some(false)
        );
        oracle
            .decide(&own, &own, ProcessPermission::Setcurrent)
            .expect("the kernel answers about setcurrent");
    }
}
