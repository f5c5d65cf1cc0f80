//! The benchmark's results: best and median per size, throughput, and the verdict against the aims.

use std::time::Duration;

/// Aims, as a fraction of memcpy's throughput for the same size.
pub const DUMP_AIM: f64 = 0.40;
pub const RESTORE_AIM: f64 = 0.30;

/// Every measurement of one size.
pub struct SizeResult {
    pub label: &'static str,
    pub bytes: usize,
    pub memcpy: Duration,
    pub dumps: Vec<Duration>,
    pub restores: Vec<Duration>,
}

fn best(times: &[Duration]) -> Duration {
    times.iter().copied().min().unwrap_or_default()
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    match sorted.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2,
    }
}

fn gib_per_s(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 30) / time.as_secs_f64()
}

fn ms(time: Duration) -> String {
    format!("{:.1} ms", time.as_secs_f64() * 1e3)
}

/// The table: one row for the best run and one for the median, per size; then the verdicts.
pub fn table(results: &[SizeResult]) -> String {
    let header = [
        "size",
        "run",
        "dump",
        "dump GiB/s",
        "restore",
        "restore GiB/s",
        "memcpy GiB/s",
        "dump/memcpy",
        "restore/memcpy",
    ];
    let mut rows: Vec<[String; 9]> = vec![header.map(str::to_owned)];
    for r in results {
        let memcpy = gib_per_s(r.bytes, r.memcpy);
        let runs = format!("{} runs", r.dumps.len());
        for (which, pick) in [
            ("best", best as fn(&[Duration]) -> Duration),
            ("median", median),
        ] {
            let (dump, restore) = (pick(&r.dumps), pick(&r.restores));
            let (dump_rate, restore_rate) = (gib_per_s(r.bytes, dump), gib_per_s(r.bytes, restore));
            rows.push([
                if which == "best" {
                    r.label.to_owned()
                } else {
                    runs.clone()
                },
                which.to_owned(),
                ms(dump),
                format!("{dump_rate:.2}"),
                ms(restore),
                format!("{restore_rate:.2}"),
                format!("{memcpy:.2}"),
                format!("{:.0}%", 100.0 * dump_rate / memcpy),
                format!("{:.0}%", 100.0 * restore_rate / memcpy),
            ]);
        }
    }
    let mut widths = [0; 9];
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < 2 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out += cells.join("  ").trim_end();
        out.push('\n');
    }
    out += &format!(
        "aims: dump >= {:.0}% of memcpy, restore >= {:.0}% of memcpy (best run; the small \
         process measures fixed costs more than throughput)\n",
        DUMP_AIM * 100.0,
        RESTORE_AIM * 100.0
    );
    for r in results {
        let memcpy = gib_per_s(r.bytes, r.memcpy);
        let dump = gib_per_s(r.bytes, best(&r.dumps)) / memcpy;
        let restore = gib_per_s(r.bytes, best(&r.restores)) / memcpy;
        out += &format!(
            "  {}: dump {:.0}% ({}), restore {:.0}% ({})\n",
            r.label,
            dump * 100.0,
            verdict(dump, DUMP_AIM),
            restore * 100.0,
            verdict(restore, RESTORE_AIM),
        );
    }
    out
}

fn verdict(ratio: f64, aim: f64) -> &'static str {
    if ratio >= aim {
        "aim met"
    } else {
        "below aim"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_bests() {
        let ms = Duration::from_millis;
        assert_eq!(median(&[ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(&[ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
        assert_eq!(best(&[ms(3), ms(1), ms(2)]), ms(1));
    }

    #[test]
    fn table_shows_rates_ratios_and_verdicts() {
        let ms = Duration::from_millis;
        let results = [SizeResult {
            label: "1 GiB",
            bytes: 1 << 30,
            memcpy: ms(100),
            dumps: vec![ms(250), ms(200), ms(400)],
            restores: vec![ms(500), ms(400), ms(300)],
        }];
        assert_eq!(
            table(&results),
            "\
size    run         dump  dump GiB/s   restore  restore GiB/s  memcpy GiB/s  dump/memcpy  restore/memcpy
1 GiB   best    200.0 ms        5.00  300.0 ms           3.33         10.00          50%             33%
3 runs  median  250.0 ms        4.00  400.0 ms           2.50         10.00          40%             25%
aims: dump >= 40% of memcpy, restore >= 30% of memcpy (best run; the small process measures fixed costs more than throughput)
  1 GiB: dump 50% (aim met), restore 33% (aim met)
"
        );
    }
}
