//! The per-turn latency waterfall as inline SVG: one row per turn, its segments (end of
//! speech → transcript → first token → first sentence → first audio) as bars on one time
//! scale shared by every row, the longest segment of each row marked dominant.
//!
//! Consumes [`TurnSteps`]; produces a [`Layout`] (pure geometry, in SVG user units) and
//! its markup: `g.wf-row[data-turn]` per turn, `rect.wf-seg[data-step]` per segment,
//! `.dominant` on the longest. No state.

use maud::{Markup, html};

use crate::calls::turns::{Step, TurnSteps};

/// The drawing's width.
pub const WIDTH: f64 = 880.0;
/// Left of the bars: the turn and what the caller said.
pub const LABEL_WIDTH: f64 = 240.0;
/// Right of the bars: the row's total.
pub const TOTAL_WIDTH: f64 = 80.0;
/// Where the bars may go.
pub const BARS_WIDTH: f64 = WIDTH - LABEL_WIDTH - TOTAL_WIDTH;
pub const ROW_HEIGHT: f64 = 28.0;
pub const BAR_HEIGHT: f64 = 16.0;
/// Room for the scale's labels above the rows.
pub const AXIS_HEIGHT: f64 = 22.0;
/// A segment of a few µs is still visible.
pub const MIN_BAR_WIDTH: f64 = 1.5;

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub step: Step,
    pub x: f64,
    pub width: f64,
    pub ms: f64,
    pub dominant: bool,
}

/// One turn's row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub turn: u32,
    pub label: String,
    pub y: f64,
    pub bars: Vec<Bar>,
    pub total_ms: Option<f64>,
    pub interrupted: bool,
    pub fallback: bool,
}

/// The whole drawing.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    pub rows: Vec<Row>,
    /// The ms at the right end of the bars' area.
    pub scale_ms: f64,
    /// Scale ticks: (x, ms).
    pub ticks: Vec<(f64, f64)>,
    pub height: f64,
}

/// The geometry of `turns`: one row each, one time scale for all (the longest turn fills
/// the bars' width).
pub fn layout(turns: &[TurnSteps]) -> Layout {
    let longest_us = turns
        .iter()
        .filter_map(|t| t.segments.last())
        .map(|s| s.to_us)
        .max()
        .unwrap_or(0);
    let scale_ms = (longest_us as f64 / 1e3).max(1.0);
    let x = |us: u64| LABEL_WIDTH + (us as f64 / 1e3) / scale_ms * BARS_WIDTH;
    let rows = turns
        .iter()
        .enumerate()
        .map(|(i, t)| Row {
            turn: t.turn,
            label: label(t),
            y: AXIS_HEIGHT + i as f64 * ROW_HEIGHT,
            bars: t
                .segments
                .iter()
                .enumerate()
                .map(|(j, s)| Bar {
                    step: s.step,
                    x: x(s.from_us),
                    width: (x(s.to_us) - x(s.from_us)).max(MIN_BAR_WIDTH),
                    ms: s.ms(),
                    dominant: t.dominant == Some(j),
                })
                .collect(),
            total_ms: t.total_ms,
            interrupted: t.interrupted,
            fallback: t.fallback,
        })
        .collect();
    let tick_ms = tick(scale_ms);
    let ticks = (0..)
        .map(|n| n as f64 * tick_ms)
        .take_while(|ms| *ms <= scale_ms + 1e-9)
        .map(|ms| (LABEL_WIDTH + ms / scale_ms * BARS_WIDTH, ms))
        .collect();
    Layout {
        rows,
        scale_ms,
        ticks,
        height: AXIS_HEIGHT + turns.len() as f64 * ROW_HEIGHT + 4.0,
    }
}

/// A round tick step giving at most six ticks over `scale_ms`.
fn tick(scale_ms: f64) -> f64 {
    [1.0, 2.0, 5.0]
        .iter()
        .flat_map(|m| (0..7).map(move |e| m * 10f64.powi(e)))
        .filter(|step| scale_ms / step <= 5.0)
        .fold(f64::INFINITY, f64::min)
}

fn label(t: &TurnSteps) -> String {
    if t.turn == 0 {
        return "t0 greeting".into();
    }
    let said: String = t.said.chars().take(28).collect();
    let more = if t.said.chars().count() > 28 {
        "…"
    } else {
        ""
    };
    format!("t{} “{}{more}”", t.turn, said.trim_end())
}

fn bar_class(bar: &Bar) -> String {
    let dominant = if bar.dominant { " dominant" } else { "" };
    format!("wf-seg wf-{}{dominant}", bar.step.as_str())
}

/// The drawing as inline SVG, with a legend of the steps.
pub fn render(layout: &Layout) -> Markup {
    let n = |v: f64| format!("{v:.1}");
    html! {
        svg.waterfall xmlns="http://www.w3.org/2000/svg" role="img"
            aria-label="Per-turn latency waterfall"
            viewBox={ "0 0 " (n(WIDTH)) " " (n(layout.height)) }
            width=(n(WIDTH)) height=(n(layout.height)) {
            @for (x, ms) in &layout.ticks {
                line.wf-tick x1=(n(*x)) x2=(n(*x)) y1=(n(AXIS_HEIGHT - 4.0))
                    y2=(n(layout.height)) {}
                text.wf-tick-label x=(n(*x)) y="12" { (format!("{ms:.0} ms")) }
            }
            @for row in &layout.rows {
                g.wf-row data-turn=(row.turn) transform={ "translate(0," (n(row.y)) ")" } {
                    text.wf-label x="4" y=(n(BAR_HEIGHT - 3.0)) { (row.label) }
                    @for bar in &row.bars {
                        rect class=(bar_class(bar))
                            data-step=(bar.step.as_str()) data-ms=(format!("{:.1}", bar.ms))
                            x=(n(bar.x)) y="2" width=(n(bar.width)) height=(n(BAR_HEIGHT - 4.0)) {
                            title { (bar.step.label()) ": " (format!("{:.0} ms", bar.ms)) }
                        }
                    }
                    text.wf-total x=(n(WIDTH - 4.0)) y=(n(BAR_HEIGHT - 3.0)) {
                        @match row.total_ms {
                            Some(ms) => (format!("{ms:.0} ms")),
                            None => "–",
                        }
                        @if row.interrupted { " ✂" }
                        @if row.fallback { " ⚠" }
                    }
                }
            }
        }
        ul.wf-legend {
            @for step in Step::ALL {
                li { span class=(format!("swatch wf-{}", step.as_str())) {} (step.label()) }
            }
            li { span.swatch.dominant {} "the turn's longest step" }
            li { "✂ barged in · ⚠ fallback phrase" }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::calls::turns::Segment;

    use super::*;

    fn turn(n: u32, segments: &[(Step, u64, u64)], dominant: usize) -> TurnSteps {
        TurnSteps {
            turn: n,
            said: if n == 0 {
                String::new()
            } else {
                "What are your opening hours on Sunday?".into()
            },
            started_at: Some(0),
            segments: segments
                .iter()
                .map(|&(step, from, to)| Segment {
                    step,
                    from_us: from * 1_000,
                    to_us: to * 1_000,
                })
                .collect(),
            dominant: Some(dominant),
            total_ms: segments.last().map(|s| s.2 as f64),
            fallback: false,
            interrupted: n == 2,
        }
    }

    /// Every row shares one scale: the longest turn spans the bars' width, a shorter one
    /// proportionally less; bars sit end to end; rows stack down.
    #[test]
    fn rows_share_one_time_scale() {
        let l = layout(&[
            turn(0, &[(Step::Sentence, 0, 100), (Step::Tts, 100, 500)], 1),
            turn(
                1,
                &[
                    (Step::Stt, 0, 200),
                    (Step::Llm, 200, 800),
                    (Step::Sentence, 800, 900),
                    (Step::Tts, 900, 1_000),
                ],
                1,
            ),
        ]);
        assert_eq!(l.scale_ms, 1_000.0);
        assert_eq!(l.rows.len(), 2);
        let end = |r: &Row| r.bars.last().map(|b| b.x + b.width).unwrap();
        assert!((end(&l.rows[1]) - (LABEL_WIDTH + BARS_WIDTH)).abs() < 1e-9);
        assert!((end(&l.rows[0]) - (LABEL_WIDTH + BARS_WIDTH / 2.0)).abs() < 1e-9);
        let b = &l.rows[1].bars;
        assert!((b[1].x - (b[0].x + b[0].width)).abs() < 1e-9);
        assert!((b[1].width - BARS_WIDTH * 0.6).abs() < 1e-9);
        assert_eq!(l.rows[1].y - l.rows[0].y, ROW_HEIGHT);
        assert_eq!(l.rows[0].label, "t0 greeting");
        assert_eq!(l.rows[1].label, "t1 “What are your opening hours…”");
    }

    /// Only the dominant segment is marked; a zero-length segment is still visible; the
    /// ticks are round and inside the scale.
    #[test]
    fn the_dominant_bar_is_marked_and_tiny_bars_show() {
        let l = layout(&[turn(2, &[(Step::Stt, 0, 0), (Step::Llm, 0, 730)], 1)]);
        let bars = &l.rows[0].bars;
        assert_eq!(bars.iter().filter(|b| b.dominant).count(), 1);
        assert!(bars[1].dominant && !bars[0].dominant);
        assert_eq!(bars[0].width, MIN_BAR_WIDTH);
        let ticks: Vec<f64> = l.ticks.iter().map(|t| t.1).collect();
        assert_eq!(ticks, [0.0, 200.0, 400.0, 600.0]);
        let svg = render(&l).into_string();
        assert_eq!(svg.matches("class=\"wf-row\"").count(), 1);
        assert_eq!(svg.matches(" dominant\" data-step").count(), 1);
        assert!(
            svg.contains("data-step=\"llm\"") && svg.contains(" ✂"),
            "{svg}"
        );
    }

    /// No turns: an empty drawing, no division by zero.
    #[test]
    fn no_turns_draw_nothing() {
        let l = layout(&[]);
        assert!(l.rows.is_empty());
        assert_eq!(l.scale_ms, 1.0);
    }
}
