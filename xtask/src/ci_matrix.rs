//! `cargo xtask ci-matrix`: the CI matrix of lab images x policy pairs x shards, as the JSON
//! of a GitHub Actions `strategy.matrix` (`{"include": [...]}`) or as a Markdown table.
//!
//! Each entry is one VM job: `image`, `distro_policy` and `container_policy` (as
//! `cargo xtask vm-test --distro-policy/--container-policy` take them), `shard` (`I/N`, for
//! `--shard`) and `name` (unique, and usable as an artifact name: no `/`).

use std::fmt::Write as _;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};

/// The lab images `cargo xtask vm-test` builds: the guest's distribution (its policy is the
/// policy pair's).
const IMAGES: &[&str] = &["debian-12"];

#[derive(Debug, Args)]
pub struct CiMatrixArgs {
    /// Lab images, comma-separated: debian-12 (the Debian 12 guest, the only one today)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "debian-12",
        value_name = "IMAGE,..."
    )]
    pub images: Vec<String>,
    /// Policy pairs DISTRO+CONTAINER, comma-separated, each as vm-test takes them:
    /// `refpolicy+lab`, or `fedora=PATH+container-selinux=PATH` (PATH as the CI job sees it)
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "refpolicy+lab",
        value_name = "PAIR,..."
    )]
    pub policies: Vec<String>,
    /// Shards per image and policy pair (each VM job runs `--shard I/N`)
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub shards: u32,
    /// `json` (GitHub Actions' matrix) or `markdown` (a table for people)
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Json,
    Markdown,
}

/// Shards beyond this are a typo: the catalog has a few dozen trials.
const MAX_SHARDS: u32 = 64;

/// One VM job of the matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub image: String,
    pub distro_policy: String,
    pub container_policy: String,
    pub shard: String,
    pub name: String,
}

/// `cargo xtask ci-matrix`: prints the matrix.
pub fn command(args: &CiMatrixArgs) -> Result<()> {
    let entries = matrix(&args.images, &args.policies, args.shards)?;
    print!(
        "{}",
        match args.format {
            Format::Json => json(&entries),
            Format::Markdown => markdown(&entries),
        }
    );
    Ok(())
}

/// The entries: images x policy pairs x shards, in that order.
pub fn matrix(images: &[String], policies: &[String], shards: u32) -> Result<Vec<Entry>> {
    if shards == 0 || shards > MAX_SHARDS {
        bail!("--shards {shards}: give a count from 1 to {MAX_SHARDS}");
    }
    if images.is_empty() || policies.is_empty() {
        bail!("--images and --policies need at least one value each");
    }
    for image in images {
        if !IMAGES.contains(&image.as_str()) {
            bail!(
                "--images {image:?}: the lab builds {} (use one of them)",
                IMAGES.join(", ")
            );
        }
    }
    let pairs: Vec<(String, String)> = policies.iter().map(|p| pair(p)).collect::<Result<_>>()?;
    let mut out: Vec<Entry> = Vec::new();
    for image in images {
        for (distro, container) in &pairs {
            for i in 1..=shards {
                let name = format!("{image}-{}-{}-{i}of{shards}", kind(distro), kind(container));
                if out.iter().any(|e| e.name == name) {
                    bail!(
                        "two entries would be named {name}: give each image and policy pair \
                         once (two sources of one kind of policy need two runs of ci-matrix)"
                    );
                }
                out.push(Entry {
                    image: image.clone(),
                    distro_policy: distro.clone(),
                    container_policy: container.clone(),
                    shard: format!("{i}/{shards}"),
                    name,
                });
            }
        }
    }
    Ok(out)
}

/// `DISTRO+CONTAINER`, checked as vm-test checks them (without the PATHs, which exist on the
/// CI machine only).
fn pair(spec: &str) -> Result<(String, String)> {
    let Some((distro, container)) = spec.split_once('+') else {
        bail!(
            "--policies {spec:?}: write a pair as DISTRO+CONTAINER: refpolicy+lab or \
             fedora=PATH+container-selinux=PATH"
        );
    };
    let fedora = match distro.split_once('=') {
        None if distro == "refpolicy" => false,
        Some(("fedora", path)) if !path.is_empty() => true,
        _ => bail!("--policies {spec:?}: the distro policy {distro:?} is neither refpolicy nor fedora=PATH"),
    };
    let container_selinux = match container.split_once('=') {
        None if container == "lab" => false,
        Some(("container-selinux", path)) if !path.is_empty() => true,
        _ => bail!("--policies {spec:?}: the container policy {container:?} is neither lab nor container-selinux=PATH"),
    };
    if fedora != container_selinux {
        bail!(
            "--policies {spec:?}: refpolicy goes with lab, fedora=PATH with \
             container-selinux=PATH (as for vm-test)"
        );
    }
    Ok((distro.to_string(), container.to_string()))
}

/// The kind of a policy spec (`fedora` of `fedora=PATH`), for names.
fn kind(spec: &str) -> &str {
    spec.split_once('=').map_or(spec, |(k, _)| k)
}

/// A JSON string.
fn string(s: &str) -> String {
    let mut out = String::from('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// GitHub Actions' matrix: `{"include": [...]}`, one line (for `$GITHUB_OUTPUT`).
pub fn json(entries: &[Entry]) -> String {
    let items: Vec<String> = entries
        .iter()
        .map(|e| {
            format!(
                "{{\"image\":{},\"distro_policy\":{},\"container_policy\":{},\"shard\":{},\"name\":{}}}",
                string(&e.image),
                string(&e.distro_policy),
                string(&e.container_policy),
                string(&e.shard),
                string(&e.name)
            )
        })
        .collect();
    format!("{{\"include\":[{}]}}\n", items.join(","))
}

/// The same as a Markdown table.
pub fn markdown(entries: &[Entry]) -> String {
    let mut out = String::from(
        "| name | image | distro policy | container policy | shard |\n| --- | --- | --- | --- | --- |\n",
    );
    for e in entries {
        let _ = writeln!(
            out,
            "| {} | {} | `{}` | `{}` | {} |",
            e.name, e.image, e.distro_policy, e.container_policy, e.shard
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_default_matrix_is_one_job() {
        let m = matrix(&strings(&["debian-12"]), &strings(&["refpolicy+lab"]), 1).unwrap();
        assert_eq!(
            json(&m),
            "{\"include\":[{\"image\":\"debian-12\",\"distro_policy\":\"refpolicy\",\
             \"container_policy\":\"lab\",\"shard\":\"1/1\",\"name\":\"debian-12-refpolicy-lab-1of1\"}]}\n"
        );
    }

    #[test]
    fn images_times_policies_times_shards() {
        let m = matrix(
            &strings(&["debian-12"]),
            &strings(&[
                "refpolicy+lab",
                "fedora=policy-src/selinux-policy+container-selinux=policy-src/container-selinux",
            ]),
            3,
        )
        .unwrap();
        assert_eq!(m.len(), 6);
        assert_eq!(
            markdown(&m),
            "\
| name | image | distro policy | container policy | shard |
| --- | --- | --- | --- | --- |
| debian-12-refpolicy-lab-1of3 | debian-12 | `refpolicy` | `lab` | 1/3 |
| debian-12-refpolicy-lab-2of3 | debian-12 | `refpolicy` | `lab` | 2/3 |
| debian-12-refpolicy-lab-3of3 | debian-12 | `refpolicy` | `lab` | 3/3 |
| debian-12-fedora-container-selinux-1of3 | debian-12 | `fedora=policy-src/selinux-policy` | `container-selinux=policy-src/container-selinux` | 1/3 |
| debian-12-fedora-container-selinux-2of3 | debian-12 | `fedora=policy-src/selinux-policy` | `container-selinux=policy-src/container-selinux` | 2/3 |
| debian-12-fedora-container-selinux-3of3 | debian-12 | `fedora=policy-src/selinux-policy` | `container-selinux=policy-src/container-selinux` | 3/3 |
"
        );
        let j = json(&m);
        assert!(
            j.starts_with("{\"include\":[{\"image\":\"debian-12\""),
            "{j}"
        );
        assert_eq!(j.matches("\"shard\":\"2/3\"").count(), 2, "{j}");
        assert_eq!(j.lines().count(), 1, "one line for $GITHUB_OUTPUT: {j}");
        // Names are artifact names: no slash, no quote, unique.
        assert!(m.iter().all(|e| !e.name.contains(['/', '"', ':'])));
        // The workflow's merge job finds one run's shards by the name less `-IofN`.
        let runs: std::collections::BTreeSet<&str> = m
            .iter()
            .map(|e| {
                let (run, shard) = e.name.rsplit_once('-').expect("a shard suffix");
                assert_eq!(shard, e.shard.replace('/', "of"));
                run
            })
            .collect();
        assert_eq!(
            runs.into_iter().collect::<Vec<_>>(),
            [
                "debian-12-fedora-container-selinux",
                "debian-12-refpolicy-lab"
            ]
        );
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }

    #[test]
    fn bad_values_are_refused_with_what_to_write() {
        let images = strings(&["debian-12"]);
        let lab = strings(&["refpolicy+lab"]);
        let e = |r: Result<Vec<Entry>>| r.unwrap_err().to_string();
        assert!(e(matrix(&images, &lab, 0)).contains("from 1 to 64"));
        assert!(e(matrix(&images, &lab, 65)).contains("from 1 to 64"));
        assert!(e(matrix(&strings(&["fedora-41"]), &lab, 1)).contains("the lab builds debian-12"));
        assert!(e(matrix(&images, &strings(&["refpolicy"]), 1)).contains("DISTRO+CONTAINER"));
        assert!(e(matrix(
            &images,
            &strings(&["refpolicy+container-selinux=x"]),
            1
        ))
        .contains("refpolicy goes with lab"));
        assert!(e(matrix(&images, &strings(&["debian+lab"]), 1)).contains("neither refpolicy"));
        assert!(e(matrix(
            &images,
            &strings(&["fedora=+container-selinux=x"]),
            1
        ))
        .contains("neither refpolicy"));
        assert!(e(matrix(
            &images,
            &strings(&["refpolicy+lab", "refpolicy+lab"]),
            2
        ))
        .contains("two entries would be named debian-12-refpolicy-lab-1of2"));
    }
}
