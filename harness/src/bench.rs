//! `crlab-lab bench`: crlab and the image's criu side by side, in one lab VM run, on the same
//! workloads (`bench_memory`: a small process, 512 MiB of touched memory, 16 threads, a
//! 10-process tree), each dumped to a tmpfs and restored `runs` times, with the guest's own
//! memcpy rate as the limit; for `cargo xtask bench compare`.
//!
//! Times are the agent's (`CommandResult::elapsed_ms`: from the tool's start to its exit).
//! SELinux is put in permissive mode for the whole run: criu (Debian's build, without
//! libselinux) cannot dump a process under the lab's enforcing policy at all, and both tools
//! must run under the same rules; the report says so. Every restore is checked by the
//! workload itself (its whole memory pattern), so a fast restore that lost pages is a failure,
//! not a result.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::lab::Lab;
use crate::scenario::Engine;
use crate::trial::drive::{self, driver};
use crate::trial::{Backend, GUEST_BIN};
use crlab_workloads::protocol;

const MIB: u64 = 1 << 20;

/// Where the runs happen in the guest: a tmpfs of its own, so images cost memory, not disk.
const DIR: &str = "/var/tmp/crlab-bench";
/// Big enough for the largest workload's images plus slack (the VM has the memory for it and
/// for the workload itself).
const TMPFS_SIZE: &str = "1200m";
/// How long one step may take.
const STEP: Duration = Duration::from_secs(300);
/// How much memory the guest's memcpy measurement copies.
const MEMCPY_BYTES: u64 = 256 * MIB;

/// A workload measured: its label and `bench_memory`'s arguments.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub label: &'static str,
    pub bytes: u64,
    pub extra: &'static [&'static str],
}

/// The workloads measured, small first so that a broken tool fails fast.
pub const SHAPES: [Shape; 4] = [
    Shape {
        label: "small process (8 MiB)",
        bytes: 8 * MIB,
        extra: &[],
    },
    Shape {
        label: "16 threads (8 MiB)",
        bytes: 8 * MIB,
        extra: &["threads", "16"],
    },
    Shape {
        label: "10 processes (8 MiB)",
        bytes: 8 * MIB,
        extra: &["procs", "10"],
    },
    Shape {
        label: "512 MiB touched",
        bytes: 512 * MIB,
        extra: &[],
    },
];

/// One dump and restore.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub dump_s: f64,
    pub restore_s: f64,
    pub image_bytes: u64,
}

/// The median and spread of some times, in seconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Stats {
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
}

impl Stats {
    /// `None` for no times.
    pub fn of(times: &[f64]) -> Option<Stats> {
        let mut t: Vec<f64> = times.iter().copied().filter(|x| x.is_finite()).collect();
        if t.is_empty() {
            return None;
        }
        t.sort_by(f64::total_cmp);
        let n = t.len();
        let median_s = if n % 2 == 1 {
            t[n / 2]
        } else {
            (t[n / 2 - 1] + t[n / 2]) / 2.0
        };
        Some(Stats {
            median_s,
            min_s: t[0],
            max_s: t[n - 1],
        })
    }
}

/// One workload with one tool.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: &'static str,
    pub tool: &'static str,
    pub samples: Vec<Sample>,
    pub dump: Option<Stats>,
    pub restore: Option<Stats>,
    /// Why the runs stopped early, if they did (the tool's error, or the workload's check).
    pub failure: Option<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the lab came up (its kernel, policy, accelerator).
    pub lab: String,
    pub policies: String,
    pub selinux: &'static str,
    pub runs: usize,
    /// The guest's memcpy rate, bytes per second.
    pub memcpy_bytes_per_s: f64,
    pub rows: Vec<Row>,
}

/// Runs every shape with both tools `runs` times; `progress` hears about each run. Permissive
/// first: the agent's domain may not even run `mount` under the lab's policy.
pub fn run(lab: &mut Lab, runs: usize, progress: &mut dyn FnMut(&str)) -> Result<Report, String> {
    sh(
        lab,
        &format!(
            "setenforce 0 && mkdir -p {DIR} && mount -t tmpfs -o size={TMPFS_SIZE} crlab-bench {DIR}"
        ),
    )?;
    let memcpy = memcpy_rate(lab)?;
    progress(&format!(
        "guest memcpy: {:.2} GB/s (best of 5 copies of {} MiB)",
        memcpy / 1e9,
        MEMCPY_BYTES / MIB
    ));
    let mut rows = Vec::new();
    for shape in SHAPES {
        for tool in Backend::ALL {
            let row = measure(lab, shape, tool, runs, progress);
            rows.push(row);
        }
    }
    let _ = sh(lab, "setenforce 1");
    Ok(Report {
        lab: String::new(),
        policies: String::new(),
        selinux: "permissive for both tools (criu, Debian's build without libselinux, cannot \
                  dump under the lab's enforcing policy)",
        runs,
        memcpy_bytes_per_s: memcpy,
        rows,
    })
}

/// The guest's memcpy rate in bytes per second.
fn memcpy_rate(lab: &mut Lab) -> Result<f64, String> {
    let out = sh(
        lab,
        &format!("{GUEST_BIN}/bench_memory memcpy {MEMCPY_BYTES}"),
    )?;
    parse_memcpy(&out).ok_or_else(|| format!("bench_memory memcpy printed {out:?}"))
}

/// `memcpy BYTES NANOSECONDS` as bytes per second.
fn parse_memcpy(line: &str) -> Option<f64> {
    let mut it = line.split_whitespace();
    if it.next()? != "memcpy" {
        return None;
    }
    let bytes: f64 = it.next()?.parse().ok()?;
    let nanos: f64 = it.next()?.parse().ok()?;
    (nanos > 0.0).then(|| bytes / (nanos / 1e9))
}

fn measure(
    lab: &mut Lab,
    shape: Shape,
    tool: Backend,
    runs: usize,
    progress: &mut dyn FnMut(&str),
) -> Row {
    let mut samples = Vec::new();
    let mut failure = None;
    for run in 1..=runs {
        match one_run(lab, shape, tool) {
            Ok(s) => {
                progress(&format!(
                    "{} with {}, run {run}/{runs}: dump {:.2} s, restore {:.2} s, images {:.1} MiB",
                    shape.label,
                    tool.name(),
                    s.dump_s,
                    s.restore_s,
                    s.image_bytes as f64 / MIB as f64
                ));
                samples.push(s);
            }
            Err(e) => {
                progress(&format!(
                    "{} with {}, run {run}/{runs}: FAILED: {e}",
                    shape.label,
                    tool.name()
                ));
                failure = Some(e);
                break;
            }
        }
    }
    let dumps: Vec<f64> = samples.iter().map(|s| s.dump_s).collect();
    let restores: Vec<f64> = samples.iter().map(|s| s.restore_s).collect();
    Row {
        workload: shape.label,
        tool: tool.name(),
        dump: Stats::of(&dumps),
        restore: Stats::of(&restores),
        samples,
        failure,
    }
}

/// One dump and restore of a fresh workload; the workload checks its memory after.
fn one_run(lab: &mut Lab, shape: Shape, tool: Backend) -> Result<Sample, String> {
    let state = format!("{DIR}/state");
    let images = format!("{DIR}/images");
    let pidfile = format!("{DIR}/restored.pid");
    sh(
        lab,
        &format!("rm -rf {state} {images} {pidfile}; mkdir -p {state} {images}"),
    )?;
    let bytes = shape.bytes.to_string();
    let mut argv = vec![format!("{GUEST_BIN}/bench_memory"), state.clone(), bytes];
    argv.extend(shape.extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pid = lab
        .spawn(&argv, &[], "", false, &format!("{DIR}/workload.log"))
        .map_err(|e| format!("starting bench_memory: {e}"))?;
    let result = dump_restore_check(lab, tool, pid, &state, &images, &pidfile);
    // Whatever happened: nothing of this run outlives it.
    let _ = sh(
        lab,
        &format!(
            "pkill -KILL -f {GUEST_BIN}/bench_memory; rm -rf {state} {images} {pidfile}; true"
        ),
    );
    result
}

fn dump_restore_check(
    lab: &mut Lab,
    tool: Backend,
    pid: u32,
    state: &str,
    images: &str,
    pidfile: &str,
) -> Result<Sample, String> {
    let ready = driver(lab, state)
        .wait_ready(STEP, || None)
        .map_err(|e| format!("bench_memory did not get ready: {}", e.with_sources()))?;
    let tree = sh(lab, &format!("{TREE} {pid}"))?;
    let engine = Engine::default();
    let dump = timed(
        lab,
        &tool.dump_argv(GUEST_BIN, &engine, pid, images),
        images,
        "dump",
    )?;
    // The dump killed the tree; its pids must be free before the restore takes them again.
    let pids = tree
        .split_whitespace()
        .map(|p| p.parse::<u32>())
        .collect::<Result<Vec<u32>, _>>()
        .map_err(|_| format!("the dumped tree's pids are not numbers: {tree:?}"))?;
    drive::wait_gone(lab, &pids).map_err(|e| format!("the dumped tree did not end: {e}"))?;
    let size = sh(lab, &format!("du -sb {images} | cut -f1"))?;
    let image_bytes = size.trim().parse().unwrap_or(0);
    let restore = timed(
        lab,
        &tool.restore_argv(GUEST_BIN, &engine, images, pidfile),
        images,
        "restore",
    )?;
    let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    let mut d = driver(lab, state);
    d.trigger(&ready, pid)
        .map_err(|e| format!("triggering the restored workload: {}", e.with_sources()))?;
    match d.wait_result(STEP, || None) {
        Ok(protocol::Outcome::Passed) => Ok(Sample {
            dump_s: dump,
            restore_s: restore,
            image_bytes,
        }),
        Ok(protocol::Outcome::Failed(why)) => {
            Err(format!("the restored workload failed its check: {why}"))
        }
        Err(e) => Err(format!(
            "the restored workload gave no result: {}",
            e.with_sources()
        )),
    }
}

/// The pids of a process tree, root first (`TREE PID`).
const TREE: &str =
    "t() { echo $1; for c in $(cat /proc/$1/task/*/children 2>/dev/null); do t $c; done; }; t";

/// Runs a tool's command and returns its time in seconds, or its error (with criu's log tail).
fn timed(lab: &mut Lab, argv: &[String], images: &str, verb: &str) -> Result<f64, String> {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let r = lab
        .run(&argv, "", STEP)
        .map_err(|e| format!("{verb}: {e}"))?;
    if r.timed_out || r.exit_code != 0 {
        let log = sh(
            lab,
            &format!("tail -n 5 {images}/{verb}.log 2>/dev/null; true"),
        )
        .unwrap_or_default();
        return Err(format!(
            "{} {verb} exited {}{}: {}{}",
            argv.first().copied().unwrap_or("?"),
            r.exit_code,
            if r.timed_out { " (timed out)" } else { "" },
            String::from_utf8_lossy(&r.stderr).trim(),
            if log.trim().is_empty() {
                String::new()
            } else {
                format!("; its log ends with: {}", log.trim())
            }
        ));
    }
    Ok(r.elapsed_ms as f64 / 1000.0)
}

/// Runs `script` as root in the agent's context; its stdout, or why it failed.
fn sh(lab: &mut Lab, script: &str) -> Result<String, String> {
    let (code, out, err) = drive::sh(lab, script, "", STEP.as_secs())?;
    if code != 0 {
        return Err(format!("`{script}` exited {code}: {}", err.trim()));
    }
    Ok(out)
}

/// `median (min-max)` in seconds, or `-`.
fn cell(s: Option<Stats>) -> String {
    match s {
        Some(s) => format!("{:.2} s ({:.2}-{:.2})", s.median_s, s.min_s, s.max_s),
        None => "-".into(),
    }
}

/// The table the terminal shows: per workload and tool, the times, the image size, how far
/// from the memcpy limit, and crlab's time as a share of criu's.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", r.lab);
    let _ = writeln!(out, "policies: {}", r.policies);
    let _ = writeln!(out, "SELinux: {}", r.selinux);
    let _ = writeln!(
        out,
        "guest memcpy: {:.2} GB/s; {} run(s) each, median (min-max); images on a tmpfs",
        r.memcpy_bytes_per_s / 1e9,
        r.runs
    );
    let header = [
        "WORKLOAD",
        "TOOL",
        "DUMP",
        "RESTORE",
        "IMAGES",
        "MEMCPY OF IMAGES",
        "VS CRIU (DUMP/RESTORE)",
    ];
    let mut rows: Vec<[String; 7]> = Vec::new();
    for row in &r.rows {
        let images = row
            .samples
            .first()
            .map(|s| s.image_bytes)
            .unwrap_or_default();
        let limit = if r.memcpy_bytes_per_s > 0.0 && images > 0 {
            format!("{:.3} s", images as f64 / r.memcpy_bytes_per_s)
        } else {
            "-".into()
        };
        let criu = r
            .rows
            .iter()
            .find(|c| c.workload == row.workload && c.tool == "criu");
        let ratio = |a: Option<Stats>, b: Option<Stats>| match (a, b) {
            (Some(a), Some(b)) if b.median_s > 0.0 => format!("{:.2}x", a.median_s / b.median_s),
            _ => "-".into(),
        };
        let vs = match (row.tool, criu) {
            ("crlab", Some(c)) => format!(
                "{} / {}",
                ratio(row.dump, c.dump),
                ratio(row.restore, c.restore)
            ),
            _ => String::new(),
        };
        rows.push([
            row.workload.to_string(),
            row.tool.to_string(),
            cell(row.dump),
            cell(row.restore),
            format!("{:.1} MiB", images as f64 / MIB as f64),
            limit,
            vs,
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut line = |cells: [&str; 7]| {
        let mut text = String::new();
        for (i, c) in cells.iter().enumerate() {
            let _ = write!(text, "{c:<w$}  ", w = widths[i]);
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }
    for row in r.rows.iter().filter(|r| r.failure.is_some()) {
        let _ = writeln!(
            out,
            "{} with {} stopped after {} run(s): {}",
            row.workload,
            row.tool,
            row.samples.len(),
            row.failure.as_deref().unwrap_or_default()
        );
    }
    out
}

/// The chart: per workload, the median dump and restore time of each tool, as bars.
pub fn chart(r: &Report, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;

    let series: [(&str, &str, bool, RGBColor); 4] = [
        ("crlab dump", "crlab", true, RGBColor(31, 119, 180)),
        ("criu dump", "criu", true, RGBColor(255, 127, 14)),
        ("crlab restore", "crlab", false, RGBColor(174, 199, 232)),
        ("criu restore", "criu", false, RGBColor(255, 187, 120)),
    ];
    let value = |workload: &str, tool: &str, dump: bool| {
        r.rows
            .iter()
            .find(|row| row.workload == workload && row.tool == tool)
            .and_then(|row| if dump { row.dump } else { row.restore })
            .map(|s| s.median_s)
    };
    let top = r
        .rows
        .iter()
        .flat_map(|row| [row.dump, row.restore])
        .flatten()
        .map(|s| s.max_s)
        .fold(0.0f64, f64::max)
        .max(0.1)
        * 1.15;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (960, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let n = SHAPES.len() as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                "crlab and criu in the same lab VM: median seconds (SELinux permissive)",
                ("sans-serif", 18),
            )
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..n, 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(SHAPES.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor();
                if (x - i - 0.5).abs() < 1e-6 && i >= 0.0 && (i as usize) < SHAPES.len() {
                    SHAPES[i as usize].label.to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("seconds (median)")
            .draw()?;
        let width = 0.8 / series.len() as f64;
        for (k, (name, tool, dump, color)) in series.iter().enumerate() {
            let bars: Vec<Rectangle<(f64, f64)>> = SHAPES
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let v = value(s.label, tool, *dump)?;
                    let x0 = i as f64 + 0.1 + k as f64 * width;
                    Some(Rectangle::new([(x0, 0.0), (x0 + width, v)], color.filled()))
                })
                .collect();
            let color = *color;
            chart.draw_series(bars)?.label(*name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
            });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| format!("drawing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_the_median_and_the_spread() {
        assert_eq!(Stats::of(&[]), None);
        let s = Stats::of(&[3.0, 1.0, 2.0]).expect("stats");
        assert_eq!((s.median_s, s.min_s, s.max_s), (2.0, 1.0, 3.0));
        let s = Stats::of(&[4.0, 1.0, 2.0, 3.0]).expect("stats");
        assert_eq!(s.median_s, 2.5);
    }

    #[test]
    fn the_memcpy_line_is_a_rate() {
        let rate = parse_memcpy("memcpy 1000000000 500000000\n").expect("a rate");
        assert!((rate - 2e9).abs() < 1.0, "{rate}");
        assert_eq!(parse_memcpy("memcpy 10 0"), None);
        assert_eq!(parse_memcpy("something else"), None);
    }

    fn report() -> Report {
        let sample = |d, r| Sample {
            dump_s: d,
            restore_s: r,
            image_bytes: 8 * MIB,
        };
        let row = |tool, d, r| Row {
            workload: SHAPES[0].label,
            tool,
            samples: vec![sample(d, r)],
            dump: Stats::of(&[d]),
            restore: Stats::of(&[r]),
            failure: None,
        };
        Report {
            lab: "lab ready".into(),
            policies: "refpolicy".into(),
            selinux: "permissive",
            runs: 1,
            memcpy_bytes_per_s: 4e9,
            rows: vec![row("crlab", 0.5, 0.25), row("criu", 0.25, 0.5)],
        }
    }

    #[test]
    fn the_table_sets_crlab_against_criu_and_memcpy() {
        let text = render(&report());
        assert!(text.contains("0.50 s (0.50-0.50)"), "{text}");
        assert!(text.contains("2.00x / 0.50x"), "{text}");
        // 8 MiB at 4 GB/s.
        assert!(text.contains("0.002 s"), "{text}");
    }

    #[test]
    fn the_chart_is_an_svg_with_every_series() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("bench.svg");
        chart(&report(), &path).expect("drawn");
        let svg = std::fs::read_to_string(&path).expect("written");
        assert!(svg.starts_with("<svg"), "{svg}");
        for name in ["crlab dump", "criu dump", "crlab restore", "criu restore"] {
            assert!(svg.contains(name), "{name} missing");
        }
    }
}
