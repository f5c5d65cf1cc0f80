//! Audit records: parsing AVC / SELINUX_ERR lines and normalising them so a
//! policy change shows up as a reviewable diff (pids, times, serials, inodes
//! and devices redacted).

use serde::{Deserialize, Serialize};

/// One parsed audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// `AVC`, `USER_AVC` or `SELINUX_ERR`.
    pub kind: String,
    /// `denied` or `granted` for AVCs; `op=...` result for SELINUX_ERR.
    pub result: String,
    pub permissions: Vec<String>,
    pub comm: String,
    pub source_type: String,
    pub target_type: String,
    pub class: String,
    /// The whole line with variable fields redacted.
    pub normalized: String,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[start..];
    let end = if let Some(quoted) = rest.strip_prefix('"') {
        quoted.find('"').map(|i| i + 2)?
    } else {
        rest.find(' ').unwrap_or(rest.len())
    };
    Some(rest[..end].trim_matches('"'))
}

/// Redacts what changes from run to run.
pub fn normalize(line: &str) -> String {
    let mut out = Vec::new();
    for tok in line.split(' ') {
        let redacted = if let Some(rest) = tok.strip_prefix("msg=audit(") {
            let _ = rest;
            "msg=audit([time]):".to_string()
        } else {
            match tok.split_once('=') {
                Some((
                    k @ ("pid" | "ino" | "dev" | "ses" | "auid" | "ppid" | "path" | "name"
                    | "laddr" | "faddr"),
                    _,
                )) => {
                    format!("{k}=[{k}]")
                }
                _ => tok.to_string(),
            }
        };
        out.push(redacted);
    }
    // Collapse the double spaces the kernel uses.
    out.into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Parses one audit line; `None` for lines of other types.
pub fn parse(line: &str) -> Option<AuditRecord> {
    let kind = field(&format!(" {line}"), "type")?.to_string();
    let kind = match kind.as_str() {
        "AVC" | "1400" => "AVC".to_string(),
        "USER_AVC" | "1107" => "USER_AVC".to_string(),
        "SELINUX_ERR" | "1401" => "SELINUX_ERR".to_string(),
        _ => return None,
    };
    let (result, permissions) = if let Some(i) = line.find("avc:") {
        let rest = &line[i + 4..];
        let result = rest.split_whitespace().next().unwrap_or("").to_string();
        let perms = match (rest.find('{'), rest.find('}')) {
            (Some(a), Some(b)) if a < b => rest[a + 1..b]
                .split_whitespace()
                .map(String::from)
                .collect(),
            _ => Vec::new(),
        };
        (result, perms)
    } else {
        let result = field(line, "seresult").unwrap_or("").to_string();
        let op = field(line, "op").unwrap_or("").to_string();
        (result, if op.is_empty() { Vec::new() } else { vec![op] })
    };
    let scontext = field(line, "scontext")
        .or_else(|| field(line, "oldcontext"))
        .unwrap_or("");
    let tcontext = field(line, "tcontext")
        .or_else(|| field(line, "newcontext"))
        .unwrap_or("");
    Some(AuditRecord {
        kind,
        result,
        permissions,
        comm: field(line, "comm").unwrap_or("").to_string(),
        source_type: crate::context::type_of(scontext).to_string(),
        target_type: crate::context::type_of(tcontext).to_string(),
        class: field(line, "tclass").unwrap_or("").to_string(),
        normalized: normalize(line),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AVC: &str = r#"type=AVC msg=audit(1795957209.248:20): avc:  denied  { connectto } for  pid=197 comm="crlab" path=002F6372 scontext=system_u:system_r:container_t:s0:c1,c2 tcontext=system_u:system_r:container_runtime_t:s0 tclass=unix_stream_socket permissive=0"#;
    const ERR: &str = "type=SELINUX_ERR msg=audit(1795957209.300:21): op=security_bounded_transition seresult=denied oldcontext=system_u:system_r:container_runtime_t:s0 newcontext=system_u:system_r:container_t:s0:c1,c2";

    #[test]
    fn parses_an_avc_denial() {
        let r = parse(AVC).unwrap();
        assert_eq!(r.kind, "AVC");
        assert_eq!(r.result, "denied");
        assert_eq!(r.permissions, vec!["connectto"]);
        assert_eq!(r.comm, "crlab");
        assert_eq!(
            (r.source_type.as_str(), r.target_type.as_str()),
            ("container_t", "container_runtime_t")
        );
        assert_eq!(r.class, "unix_stream_socket");
        assert!(r.normalized.contains("msg=audit([time]):"));
        assert!(r.normalized.contains("pid=[pid]"));
        assert!(!r.normalized.contains("197"));
    }

    #[test]
    fn parses_a_bounded_transition_error() {
        let r = parse(ERR).unwrap();
        assert_eq!(r.kind, "SELINUX_ERR");
        assert_eq!(r.result, "denied");
        assert_eq!(r.permissions, vec!["security_bounded_transition"]);
        assert_eq!(
            (r.source_type.as_str(), r.target_type.as_str()),
            ("container_runtime_t", "container_t")
        );
    }

    #[test]
    fn ignores_other_records() {
        assert!(parse("type=SYSCALL msg=audit(1.2:3): arch=c000003e syscall=1").is_none());
    }
}
