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
    /// The kernel's decision on `class { permissions }` (all of them) from `source` to `target`.
    fn decide_on(
        &self,
        source: &str,
        target: &str,
        class: &'static str,
        permissions: &[&'static str],
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
        self.query(self.class, "process", source, target, &[permission.name()])
    }

    fn decide_on(
        &self,
        source: &str,
        target: &str,
        class: &'static str,
        permissions: &[&'static str],
    ) -> Result<Decision, SelinuxError> {
        let handle =
            ::selinux::SecurityClass::from_name(class).map_err(|source| SelinuxError::Mapping {
                what: format!("class `{class}`"),
                source,
            })?;
        self.query(handle, class, source, target, permissions)
    }
}

impl KernelOracle {
    /// `security_compute_av_flags` for `class { permissions }`, all of them.
    fn query(
        &self,
        handle: ::selinux::SecurityClass,
        class: &'static str,
        source: &str,
        target: &str,
        permissions: &[&'static str],
    ) -> Result<Decision, SelinuxError> {
        let mut bits = 0;
        for &permission in permissions {
            bits |=
                handle
                    .access_vector_bit(permission)
                    .map_err(|source| SelinuxError::Mapping {
                        what: format!("permission `{class} {{ {permission} }}`"),
                        source,
                    })?;
        }
        let failed = |e| SelinuxError::ComputeAv {
            question: format!(
                "whether {source:?} may `{class} {{ {} }}` {target:?}",
                permissions.join(" ")
            ),
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
                handle,
                bits,
            )
            .map_err(failed)?;
        Ok(Decision {
            allowed: avd.allowed & bits == bits,
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

/// What in the policy refuses a denied permission. `allow` rules are only one of its tools:
/// constraints can refuse what the type rules grant, and then no `allow` rule helps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenialCause {
    /// No `allow` rule grants it (or no other context of the engine's would be granted it).
    TypeRules,
    /// The type rules grant it; a constraint on SELinux users and roles refuses it (Fedora's
    /// policy constrains `dyntransition` by user and role, with no exemption).
    UsersRoles,
    /// The type rules grant it; an MLS/MCS constraint refuses it for the levels involved.
    Levels,
    /// The type rules grant it; constraints on users and roles and on levels refuse it.
    UsersRolesAndLevels,
}

/// A context's four fields (user, role, type, level or range), if it has them.
pub(super) fn fields(context: &str) -> Option<[&str; 4]> {
    let mut it = context.splitn(4, ':');
    Some([it.next()?, it.next()?, it.next()?, it.next()?])
}

/// Why the policy denies `permission` from `source` to `target`, found by asking the kernel
/// again (without auditing) with the engine's context given the target's user and role, the
/// target's level, or both: the first of those the kernel would grant names the constraint.
/// `setcurrent` is asked of the engine's own context, so it is always [`DenialCause::TypeRules`].
pub fn denial_cause(
    oracle: &dyn AccessOracle,
    source: &str,
    target: &str,
    permission: ProcessPermission,
) -> DenialCause {
    if permission == ProcessPermission::Setcurrent {
        return DenialCause::TypeRules;
    }
    let (Some([su, sr, st, sl]), Some([tu, tr, _, tl])) = (fields(source), fields(target)) else {
        return DenialCause::TypeRules;
    };
    let granted = |engine: String| {
        engine != source
            && oracle.context_is_valid(&engine).unwrap_or(false)
            && oracle
                .decide(&engine, target, permission)
                .is_ok_and(|d| d.allowed)
    };
    if granted(format!("{tu}:{tr}:{st}:{sl}")) {
        DenialCause::UsersRoles
    } else if granted(format!("{su}:{sr}:{st}:{tl}")) {
        DenialCause::Levels
    } else if granted(format!("{tu}:{tr}:{st}:{tl}")) {
        DenialCause::UsersRolesAndLevels
    } else {
        DenialCause::TypeRules
    }
}

/// What would let `source` give a process the context `target`, given the `denied`
/// permissions and their causes: the `allow` rules for those the type rules refuse, and for
/// those a constraint refuses, the engine context that the kernel said it would grant.
pub fn remedy(source: &str, target: &str, denied: &[(ProcessPermission, DenialCause)]) -> String {
    let mut parts = Vec::new();
    let by_rules: Vec<ProcessPermission> = denied
        .iter()
        .filter(|(_, c)| *c == DenialCause::TypeRules)
        .map(|(p, _)| *p)
        .collect();
    if !by_rules.is_empty() {
        let rules = allow_rules(source, target, &by_rules)
            .into_iter()
            .map(|r| format!("`{r}`"))
            .collect::<Vec<_>>()
            .join(" and ");
        parts.push(format!("a policy allowing it says {rules}"));
    }
    let (Some([su, sr, _, sl]), Some([tu, tr, _, tl])) = (fields(source), fields(target)) else {
        return parts.join("; ");
    };
    let mut causes: Vec<DenialCause> = denied
        .iter()
        .map(|(_, c)| *c)
        .filter(|c| *c != DenialCause::TypeRules)
        .collect();
    causes.dedup();
    for cause in causes {
        parts.push(match cause {
            DenialCause::UsersRoles => format!(
                "no `allow` rule is missing: the type rules grant it, but a constraint on SELinux \
                 users and roles refuses it (the engine runs as {su}:{sr}, the process becomes \
                 {tu}:{tr}); the kernel would grant it to an engine running as {tu}:{tr}, as a \
                 runtime started by systemd does (e.g. `runcon -u {tu} -r {tr} crlab restore ...`)"
            ),
            DenialCause::Levels => format!(
                "no `allow` rule is missing: the type rules grant it, but an MLS/MCS constraint \
                 refuses it between the engine's level {sl} and the process's {tl}; the kernel \
                 would grant it to an engine running at {tl} (e.g. `runcon -l {tl} crlab restore ...`)"
            ),
            DenialCause::UsersRolesAndLevels => format!(
                "no `allow` rule is missing: the type rules grant it, but constraints on SELinux \
                 users and roles and on MLS/MCS levels refuse it; the kernel would grant it to an \
                 engine running as {tu}:{tr} at {tl} (e.g. `runcon -u {tu} -r {tr} -l {tl} crlab \
                 restore ...`)"
            ),
            DenialCause::TypeRules => continue,
        });
    }
    parts.join("; ")
}

/// Why a context write from `from` to `to` was denied (`EACCES`), asked again of `oracle`
/// after the fact, without auditing: the denied permissions, named, and what would grant them
/// ([`remedy`]: `allow` rules, or the engine context a constraint would let through). When the
/// kernel cannot be asked (`oracle` is `None` or errs), what the write needs.
pub fn explain_denial(oracle: Option<&dyn AccessOracle>, from: &str, to: &str) -> (String, String) {
    let denied: Option<Vec<(ProcessPermission, DenialCause)>> = oracle.and_then(|oracle| {
        ProcessPermission::FOR_CONTEXT_WRITE
            .iter()
            .map(|&p| {
                let target = if p == ProcessPermission::Setcurrent {
                    from
                } else {
                    to
                };
                oracle.decide(from, target, p).map(|d| (p, target, d))
            })
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .map(|d| {
                d.into_iter()
                    .filter(|(_, _, d)| !d.allowed)
                    .map(|(p, target, _)| (p, denial_cause(oracle, from, target, p)))
                    .collect()
            })
    });
    let (from_type, to_type) = (context_type(from), context_type(to));
    match denied {
        Some(denied) if !denied.is_empty() => {
            let names: Vec<String> = denied
                .iter()
                .map(|(p, _)| match p {
                    ProcessPermission::Setcurrent => format!("`process {{ setcurrent }}` of {from_type} on itself"),
                    ProcessPermission::Dyntransition => format!("`process {{ dyntransition }}` from {from_type} to {to_type}"),
                    ProcessPermission::Ptrace => format!("`process {{ ptrace }}` from {from_type} (the restored process's tracer) to {to_type}"),
                })
                .collect();
            (
                format!("the policy denies {}", names.join(" and ")),
                remedy(from, to, &denied),
            )
        }
        _ => (
            format!(
                "the engine's domain needs `process {{ setcurrent }}` on itself and `process {{ dyntransition }}` \
                 from {from_type} to {to_type} (and, when the users, roles or levels differ, the policy's constraints must allow them)"
            ),
            format!("a policy allowing it says `allow {from_type} {to_type}:process dyntransition;`"),
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

        fn decide_on(
            &self,
            _: &str,
            _: &str,
            _: &'static str,
            _: &[&'static str],
        ) -> Result<Decision, SelinuxError> {
            Ok(Decision {
                allowed: true,
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
            "a policy allowing it says \
             `allow unconfined_t unconfined_service_t:process { dyntransition ptrace };`"
        );
        let (why, rules) = explain_denial(None, UNCONFINED, SERVICE);
        assert!(why.starts_with("the engine's domain needs"), "{why}");
        assert_eq!(
            rules,
            "a policy allowing it says `allow unconfined_t unconfined_service_t:process dyntransition;`"
        );
    }

    /// Grants `setcurrent` and `ptrace`, and `dyntransition` only when `constraint` holds
    /// between the source's and the target's fields, as a policy's `constrain` and
    /// `mlsconstrain` statements do; every context is valid.
    struct Constrained(fn(&[&str; 4], &[&str; 4]) -> bool);

    impl AccessOracle for Constrained {
        fn context_is_valid(&self, _: &str) -> Result<bool, SelinuxError> {
            Ok(true)
        }

        fn decide(
            &self,
            source: &str,
            target: &str,
            permission: ProcessPermission,
        ) -> Result<Decision, SelinuxError> {
            let allowed = permission != ProcessPermission::Dyntransition
                || matches!((fields(source), fields(target)), (Some(s), Some(t)) if (self.0)(&s, &t));
            Ok(Decision {
                allowed,
                permissive: false,
            })
        }

        fn decide_on(
            &self,
            _: &str,
            _: &str,
            _: &'static str,
            _: &[&'static str],
        ) -> Result<Decision, SelinuxError> {
            Ok(Decision {
                allowed: true,
                permissive: false,
            })
        }
    }

    #[test]
    fn a_constraint_is_named_and_no_allow_rule_is_offered() {
        // Fedora's: the user and role may not change.
        let same_identity = Constrained(|s, t| s[0] == t[0] && s[1] == t[1]);
        let (why, remedy) = explain_denial(Some(&same_identity), UNCONFINED, CONTAINER);
        assert_eq!(
            why,
            "the policy denies `process { dyntransition }` from unconfined_t to container_t"
        );
        assert!(
            remedy.contains("a constraint on SELinux users and roles")
                && remedy.contains("`runcon -u system_u -r system_r crlab restore ...`")
                && !remedy.contains("allow unconfined_t"),
            "{remedy}"
        );
        // An MCS constraint: the engine's level must be the process's.
        let same_level = Constrained(|s, t| s[3] == t[3]);
        let (_, remedy) = explain_denial(Some(&same_level), UNCONFINED, CONTAINER);
        assert!(
            remedy.contains("an MLS/MCS constraint")
                && remedy.contains(
                    "between the engine's level s0-s0:c0.c1023 and the process's s0:c1,c2"
                )
                && remedy.contains("`runcon -l s0:c1,c2 crlab restore ...`"),
            "{remedy}"
        );
        // Both at once.
        let both = Constrained(|s, t| s[0] == t[0] && s[3] == t[3]);
        let (_, remedy) = explain_denial(Some(&both), UNCONFINED, CONTAINER);
        assert!(
            remedy.contains("`runcon -u system_u -r system_r -l s0:c1,c2 crlab restore ...`"),
            "{remedy}"
        );
        // Nothing the engine could be would be granted it: the type rules.
        let never = Constrained(|_, _| false);
        let (_, remedy) = explain_denial(Some(&never), UNCONFINED, CONTAINER);
        assert_eq!(
            remedy,
            "a policy allowing it says `allow unconfined_t container_t:process dyntransition;`"
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
