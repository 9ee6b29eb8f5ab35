//! A small SVG plot: cumulative distributions of latencies (no plotting dependency).
//!
//! Consumes named series of millisecond values; produces an SVG document with one CDF
//! line per series, axes, ticks and a legend. State: none.

use std::fmt::Write as _;

const W: f64 = 720.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const BOTTOM: f64 = 50.0;
const TOP: f64 = 40.0;
const RIGHT: f64 = 20.0;
const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// The CDF of each series on shared axes (x: ms, y: share of values at or below).
pub fn cdf_svg(title: &str, series: &[(&str, &Vec<f64>)]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max);
    let x_max = nice_ceiling(max);
    let x = |ms: f64| LEFT + (ms.max(0.0) / x_max) * (W - LEFT - RIGHT);
    let y = |share: f64| H - BOTTOM - share * (H - BOTTOM - TOP);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15">{}: latency CDF</text>"#,
        LEFT,
        escape(title)
    );
    for i in 0..=5 {
        let share = i as f64 / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{:.0}%</text>"##,
            W - RIGHT,
            LEFT - 6.0,
            y(share) + 4.0,
            share * 100.0,
            y = y(share)
        );
        let ms = x_max * i as f64 / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{ms:.0}</text>"##,
            H - BOTTOM,
            H - BOTTOM + 18.0,
            x = x(ms)
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">milliseconds</text>"#,
        (W + LEFT) / 2.0,
        H - 10.0
    );
    for (i, (name, values)) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        sorted.sort_by(f64::total_cmp);
        if !sorted.is_empty() {
            let n = sorted.len() as f64;
            let points: Vec<String> = sorted
                .iter()
                .enumerate()
                .map(|(k, v)| format!("{:.1},{:.1}", x(*v), y((k + 1) as f64 / n)))
                .collect();
            let _ = writeln!(
                svg,
                r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{:.1},{:.1} {}"/>"#,
                x(sorted[0]),
                y(0.0),
                points.join(" ")
            );
        }
        let ly = TOP + 16.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" x2="{}" y1="{ly}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{} (n={})</text>"#,
            W - 250.0,
            W - 230.0,
            W - 224.0,
            ly + 4.0,
            escape(name),
            sorted.len()
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let power = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plots_each_series_with_its_count() {
        let a = vec![10.0, 20.0, 30.0];
        let b = vec![5.0];
        let svg = cdf_svg("t <1>", &[("a", &a), ("b & c", &b)]);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(
            svg.contains("a (n=3)")
                && svg.contains("b &amp; c (n=1)")
                && svg.contains("t &lt;1&gt;")
        );
    }

    #[test]
    fn axis_ceilings_are_round() {
        for (v, c) in [
            (1.0, 1.0),
            (7.0, 10.0),
            (130.0, 200.0),
            (430.0, 500.0),
            (999.0, 1000.0),
        ] {
            assert_eq!(nice_ceiling(v), c, "{v}");
        }
    }
}
