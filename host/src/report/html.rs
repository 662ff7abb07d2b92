//! `sluice report --format html`: the evidence of one run as one
//! self-contained HTML page an approver can read, archive and print: inline
//! CSS, an inline SVG timeline of every step's phases, no script, no font,
//! image or stylesheet fetched from anywhere.
//!
//! Everything shown comes from [`Evidence`]; every string in it (step ids,
//! details, metric explanations: text that plugins and plan authors control)
//! goes through [`escape`]. Fields this renderer does not know by name are
//! still shown, under "Also recorded", from the evidence's JSON form, so a
//! field added to `Evidence` appears in the page before it gets a layout of
//! its own.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde_json::Value;

use super::evidence::{
    epoch_millis, BackupEvidence, Evidence, PhaseTiming, StepEvidence, ThresholdEvidence,
};

/// Escapes text for element content and (double- or single-) quoted
/// attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Phases in the order a step passes through them, with their colour
/// (Okabe–Ito, told apart with the common colour-vision deficiencies) and
/// what the legend says. A phase not listed here is drawn grey.
const PHASES: &[(&str, &str, &str)] = &[
    ("backup", "#0072b2", "backup"),
    ("migrate", "#e69f00", "migrate"),
    ("validate", "#009e73", "validate"),
    ("thresholds", "#cc79a7", "thresholds"),
    ("watch", "#56b4e9", "watch"),
    ("rollback", "#d55e00", "rollback"),
];
const OTHER_PHASE_COLOUR: &str = "#7f7f7f";

/// Colour of a threshold marker that held / did not.
const HELD_COLOUR: &str = "#1b7837";
const NOT_MET_COLOUR: &str = "#b2182b";

/// Timeline geometry, in SVG user units (the SVG scales to the page width).
const SVG_WIDTH: f64 = 1000.0;
const LABEL_WIDTH: f64 = 220.0;
const RIGHT_PAD: f64 = 28.0;
/// One line of legend; more lines when the items do not fit on one.
const LEGEND_LINE: f64 = 24.0;
const ROW_HEIGHT: f64 = 46.0;
const BAR_HEIGHT: f64 = 20.0;
const AXIS_HEIGHT: f64 = 40.0;
/// A phase of a few milliseconds in a run of minutes still gets a visible bar.
const MIN_BAR_WIDTH: f64 = 2.0;
/// Step ids longer than this are cut in the timeline's label column (the
/// full id is in the row's tooltip and in the step's section).
const LABEL_CHARS: usize = 26;

fn phase_colour(phase: &str) -> &'static str {
    PHASES
        .iter()
        .find(|(p, _, _)| *p == phase)
        .map_or(OTHER_PHASE_COLOUR, |(_, c, _)| c)
}

/// A name made safe for a CSS class: letters, digits and `-` only.
fn class_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A duration for people: milliseconds below a second, then seconds, then
/// minutes.
fn duration_text(ms: i64) -> String {
    if ms < 0 {
        return format!("{ms} ms");
    }
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{:.2} s", ms as f64 / 1000.0),
        _ => format!("{} min {:.1} s", ms / 60_000, (ms % 60_000) as f64 / 1000.0),
    }
}

/// A duration, friendly and exact: `1.25 s (1250 ms)`.
fn duration_exact(ms: Option<i64>) -> String {
    match ms {
        Some(ms) if ms >= 1_000 => format!("{} ({ms} ms)", duration_text(ms)),
        Some(ms) => duration_text(ms),
        None => "— (no end recorded)".to_string(),
    }
}

/// The page.
pub fn html(e: &Evidence) -> String {
    let json = serde_json::to_value(e).unwrap_or(Value::Null);
    let mut o = String::new();
    let title = format!("Evidence: plan {}, run {}", e.plan.name, e.run.id);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"sluice report\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(&title)
    );
    header(&mut o, e, &json);
    o.push_str("<section id=\"timeline-section\">\n<h2>Timeline</h2>\n");
    o.push_str(
        "<p class=\"note\">Time since the run started. One row per step, one bar per phase, \
         from the journal transition that started it to the next one; hover a bar for its \
         exact times.</p>\n",
    );
    timeline(&mut o, e);
    o.push_str("</section>\n");
    let steps_json = json["steps"].as_array();
    for (i, s) in e.steps.iter().enumerate() {
        let sj = steps_json.and_then(|a| a.get(i)).unwrap_or(&Value::Null);
        step(&mut o, i, s, sj);
    }
    let _ = write!(
        o,
        "<footer>Rebuilt by <code>sluice report</code> from the plan and the journal only; \
         no datastore was read and no connection address is shown. Plan hash at the run \
         <code>{}</code>.</footer>\n</main>\n</body>\n</html>\n",
        escape(&e.run.plan_hash)
    );
    o
}

fn header(o: &mut String, e: &Evidence, json: &Value) {
    let r = &e.run;
    let outcome = r.outcome.as_deref().unwrap_or("not recorded");
    let _ = write!(
        o,
        "<header id=\"summary\">\n<p class=\"kicker\">sluice · evidence of a run</p>\n\
         <h1>Plan <span class=\"name\">{}</span></h1>\n\
         <p class=\"verdict outcome-{}\" id=\"outcome\">Outcome: <strong>{}</strong></p>\n\
         <table class=\"kv facts\">\n",
        escape(&e.plan.name),
        class_name(outcome),
        escape(outcome)
    );
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
    };
    row("Run", format!("<code>{}</code>", escape(&r.id)));
    row(
        "Command",
        format!("<code>sluice {}</code>", escape(&r.command)),
    );
    row(
        "Plan hash",
        format!("<code>{}</code>", escape(&r.plan_hash)),
    );
    row(
        "Plan now",
        if e.plan.changed_since_run {
            format!(
                "<strong class=\"warn\">changed since the run</strong> (now <code>{}</code>)",
                escape(&e.plan.hash)
            )
        } else {
            "unchanged since the run".to_string()
        },
    );
    row("Started", escape(&r.started_at));
    row(
        "Finished",
        match &r.finished_at {
            Some(f) => {
                let took = epoch_millis(f)
                    .zip(epoch_millis(&r.started_at))
                    .map(|(b, a)| format!(" (after {})", duration_text(b - a)))
                    .unwrap_or_default();
                format!("{}{took}", escape(f))
            }
            None => "— (not recorded: still running, or the process died)".to_string(),
        },
    );
    let mut counts: Vec<(String, usize)> = Vec::new();
    for s in &e.steps {
        let state = s.final_state.as_deref().unwrap_or("not run");
        match counts.iter_mut().find(|(k, _)| k == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state.to_string(), 1)),
        }
    }
    let counts: Vec<String> = counts
        .iter()
        .map(|(k, n)| {
            format!(
                "<span class=\"state state-{}\">{n} {}</span>",
                class_name(k),
                escape(k)
            )
        })
        .collect();
    row(
        "Steps",
        format!("{} in the plan: {}", e.steps.len(), counts.join(" ")),
    );
    for (k, v) in extras(&json["run"], RUN_KEYS) {
        row(&label(k), value_html(v));
    }
    for (k, v) in extras(&json["plan"], PLAN_KEYS) {
        row(&format!("Plan: {}", label(k)), value_html(v));
    }
    o.push_str("</table>\n");
    also_recorded(o, "h2", "kv", extras(json, EVIDENCE_KEYS));
    o.push_str("</header>\n");
}

/// Where a phase sits on the timeline, in milliseconds since the origin.
struct Span {
    start: i64,
    end: Option<i64>,
}

fn span(p: &PhaseTiming, origin: i64) -> Option<Span> {
    let start = epoch_millis(&p.started_at)? - origin;
    let end = p
        .ended_at
        .as_deref()
        .and_then(epoch_millis)
        .map(|e| e - origin);
    Some(Span { start, end })
}

/// A tick step of 1, 2 or 5 times a power of ten giving at most ~8 ticks.
fn tick_step(span_ms: i64) -> i64 {
    let raw = (span_ms.max(1) as f64 / 8.0).max(1.0);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (step.round() as i64).max(1)
}

/// An axis label: as many decimals as the tick step needs.
fn tick_label(t: i64, step: i64, domain: i64) -> String {
    if t == 0 {
        return "0".to_string();
    }
    if domain < 2_000 {
        return format!("{t} ms");
    }
    if step >= 60_000 && step % 60_000 == 0 {
        return format!("{} min", t / 60_000);
    }
    let decimals = match step {
        s if s % 1000 == 0 => 0,
        s if s % 100 == 0 => 1,
        s if s % 10 == 0 => 2,
        _ => 3,
    };
    format!("{:.*} s", decimals, t as f64 / 1000.0)
}

/// The SVG timeline: x is time since the run started, one row per step
/// (`<g class="row" data-step="…">`), one `<rect class="bar …">` per
/// recorded phase with a `<title>` giving its exact times.
fn timeline(o: &mut String, e: &Evidence) {
    let starts = e
        .steps
        .iter()
        .flat_map(|s| &s.phases)
        .filter_map(|p| epoch_millis(&p.started_at));
    let origin = epoch_millis(&e.run.started_at)
        .or_else(|| starts.clone().min())
        .unwrap_or(0);
    let mut last = e
        .run
        .finished_at
        .as_deref()
        .and_then(epoch_millis)
        .map_or(0, |f| f - origin);
    for p in e.steps.iter().flat_map(|s| &s.phases) {
        if let Some(sp) = span(p, origin) {
            last = last.max(sp.start).max(sp.end.unwrap_or(sp.start));
        }
    }
    let step = tick_step(last);
    // The axis ends on a tick at or after the last recorded time.
    let domain = ((last.max(1) + step - 1) / step * step).max(step);
    let plot = SVG_WIDTH - LABEL_WIDTH - RIGHT_PAD;
    let x = |t: i64| LABEL_WIDTH + (t.clamp(0, domain) as f64 / domain as f64) * plot;
    let legend = legend_items(e);
    // Items flow left to right from the label column's edge, wrapping at the
    // right margin; text is ~7 units a character in the 12px legend font.
    let mut placed = Vec::new();
    let (mut lx, mut line) = (8.0, 0.0);
    for item in &legend {
        let w = 19.0 + item.1.chars().count() as f64 * 7.0 + 20.0;
        if lx + w > SVG_WIDTH - RIGHT_PAD && lx > 8.0 {
            lx = 8.0;
            line += 1.0;
        }
        placed.push((lx, 6.0 + line * LEGEND_LINE));
        lx += w;
    }
    let rows_top = 10.0 + (line + 1.0) * LEGEND_LINE;
    let rows_bottom = rows_top + ROW_HEIGHT * e.steps.len() as f64;
    let height = rows_bottom + AXIS_HEIGHT;
    let _ = writeln!(
        o,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\" viewBox=\"0 0 {SVG_WIDTH} \
         {height}\" width=\"100%\" role=\"img\" aria-labelledby=\"timeline-title\" \
         data-origin=\"{}\" data-domain-ms=\"{domain}\">\n<title id=\"timeline-title\">Phases of \
         each step of run {} over time</title>",
        escape(&e.run.started_at),
        escape(&e.run.id)
    );

    o.push_str("<g id=\"timeline-legend\" class=\"legend\">\n");
    for ((class, text, colour), (lx, ly)) in legend.iter().zip(placed) {
        if class.starts_with("phase-") {
            let _ = writeln!(
                o,
                "<g class=\"legend-item {class}\"><rect x=\"{lx}\" y=\"{ly}\" width=\"14\" \
                 height=\"14\" rx=\"2\" fill=\"{colour}\"/><text x=\"{}\" y=\"{}\">{}</text></g>",
                lx + 19.0,
                ly + 11.5,
                escape(text)
            );
        } else {
            let _ = writeln!(
                o,
                "<g class=\"legend-item marker-{class}\">{}<text x=\"{}\" y=\"{}\">{}</text></g>",
                diamond(lx + 7.0, ly + 7.0, colour),
                lx + 19.0,
                ly + 11.5,
                escape(text)
            );
        }
    }
    o.push_str("</g>\n");

    // Grid lines and the axis, under the bars.
    let _ = writeln!(
        o,
        "<g id=\"timeline-axis\" class=\"axis\" data-tick-ms=\"{step}\">\n<line class=\"axis-line\" \
         x1=\"{LABEL_WIDTH}\" y1=\"{rows_bottom}\" x2=\"{}\" y2=\"{rows_bottom}\"/>",
        LABEL_WIDTH + plot
    );
    let mut t = 0;
    while t <= domain {
        let tx = x(t);
        let _ = writeln!(
            o,
            "<g class=\"tick\" data-ms=\"{t}\"><line class=\"grid\" x1=\"{tx:.1}\" \
             y1=\"{rows_top}\" x2=\"{tx:.1}\" y2=\"{rows_bottom}\"/><line x1=\"{tx:.1}\" \
             y1=\"{rows_bottom}\" x2=\"{tx:.1}\" y2=\"{}\"/><text x=\"{tx:.1}\" y=\"{}\" \
             text-anchor=\"middle\">{}</text></g>",
            rows_bottom + 5.0,
            rows_bottom + 19.0,
            tick_label(t, step, domain)
        );
        t += step;
    }
    let _ = writeln!(
        o,
        "<text class=\"axis-title\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">time since the run \
         started</text>\n</g>",
        LABEL_WIDTH + plot / 2.0,
        rows_bottom + 35.0
    );

    for (i, s) in e.steps.iter().enumerate() {
        let top = rows_top + ROW_HEIGHT * i as f64;
        let state = s.final_state.as_deref().unwrap_or("not run");
        let mut id_label: String = s.id.chars().take(LABEL_CHARS).collect();
        if s.id.chars().count() > LABEL_CHARS {
            id_label.push('…');
        }
        let _ = writeln!(
            o,
            "<g class=\"row state-{}\" data-step=\"{}\" data-phases=\"{}\">\n<title>step {}: {}\
             </title>\n<rect class=\"row-bg\" x=\"0\" y=\"{top}\" width=\"{SVG_WIDTH}\" \
             height=\"{ROW_HEIGHT}\"/>\n<text class=\"step-id\" x=\"8\" y=\"{}\">{}</text>\n\
             <text class=\"step-state state-{}\" x=\"8\" y=\"{}\">{}</text>",
            class_name(state),
            escape(&s.id),
            s.phases.len(),
            escape(&s.id),
            escape(state),
            top + 19.0,
            escape(&id_label),
            class_name(state),
            top + 35.0,
            escape(state)
        );
        let bar_y = top + (ROW_HEIGHT - BAR_HEIGHT) / 2.0;
        if s.phases.is_empty() {
            let _ = writeln!(
                o,
                "<text class=\"idle\" x=\"{}\" y=\"{}\">no phase ran in this run</text>",
                LABEL_WIDTH + 6.0,
                top + ROW_HEIGHT / 2.0 + 4.0
            );
        }
        for p in &s.phases {
            let Some(sp) = span(p, origin) else {
                continue;
            };
            let x0 = x(sp.start);
            let x1 = x(sp.end.unwrap_or(last));
            let w = (x1 - x0).max(MIN_BAR_WIDTH);
            let open = if sp.end.is_none() { " open" } else { "" };
            let ended = match (&p.ended_at, &p.ended_in) {
                (Some(at), Some(state)) => format!("ended {at} in {state}"),
                (Some(at), None) => format!("ended {at}"),
                _ => "no end recorded".to_string(),
            };
            let tooltip = format!(
                "{} of {}: {} — started {} (+{}), {}{}",
                p.phase,
                s.id,
                duration_exact(p.duration_ms),
                p.started_at,
                duration_text(sp.start),
                ended,
                p.detail
                    .as_deref()
                    .map(|d| format!(" — {d}"))
                    .unwrap_or_default()
            );
            let _ = writeln!(
                o,
                "<rect class=\"bar phase-{}{open}\" data-phase=\"{}\" data-start-ms=\"{}\" \
                 data-duration-ms=\"{}\" x=\"{x0:.2}\" y=\"{bar_y}\" width=\"{w:.2}\" \
                 height=\"{BAR_HEIGHT}\" rx=\"2\" fill=\"{}\"><title>{}</title></rect>",
                class_name(&p.phase),
                escape(&p.phase),
                sp.start,
                p.duration_ms.map_or(String::new(), |d| d.to_string()),
                phase_colour(&p.phase),
                escape(&tooltip)
            );
            // A label inside the bar when it fits.
            let text = match p.duration_ms {
                Some(d) if w >= 120.0 => format!("{} {}", p.phase, duration_text(d)),
                Some(d) if w >= 52.0 => duration_text(d),
                _ => String::new(),
            };
            if !text.is_empty() {
                let _ = writeln!(
                    o,
                    "<text class=\"bar-label\" x=\"{:.2}\" y=\"{}\" text-anchor=\"middle\" \
                     aria-hidden=\"true\">{}</text>",
                    x0 + w / 2.0,
                    bar_y + BAR_HEIGHT / 2.0 + 4.0,
                    escape(&text)
                );
            }
        }
        // The verdict of the thresholds, where validate ended.
        if let Some(held) = threshold_verdict(s) {
            let at = s
                .phases
                .iter()
                .rev()
                .find(|p| p.phase == "validate")
                .and_then(|p| span(p, origin))
                .and_then(|sp| sp.end);
            if let Some(at) = at {
                let lines: Vec<String> = s
                    .thresholds
                    .iter()
                    .map(|t| format!("{}: {}", t.source, threshold_word(t)))
                    .collect();
                let (class, colour) = if held {
                    ("held", HELD_COLOUR)
                } else {
                    ("not-met", NOT_MET_COLOUR)
                };
                let _ = writeln!(
                    o,
                    "<g class=\"marker thresholds {class}\">{}<title>thresholds of {}: {}\
                     </title></g>",
                    diamond(x(at), bar_y - 3.0, colour),
                    escape(&s.id),
                    escape(&lines.join("; "))
                );
            }
        }
        o.push_str("</g>\n");
    }
    o.push_str("</svg>\n");
}

fn diamond(cx: f64, cy: f64, colour: &str) -> String {
    let r = 6.0;
    format!(
        "<polygon points=\"{:.1},{:.1} {:.1},{:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{colour}\" \
         stroke=\"#fff\" stroke-width=\"1.5\"/>",
        cx,
        cy - r,
        cx + r,
        cy,
        cx,
        cy + r,
        cx - r,
        cy
    )
}

/// The legend: the phases this run has, in the order steps pass through
/// them, then any phase this renderer has no colour for, then the threshold
/// markers drawn. Each item: (class, text, colour).
fn legend_items(e: &Evidence) -> Vec<(String, String, &'static str)> {
    let mut present: Vec<&str> = Vec::new();
    for p in e.steps.iter().flat_map(|s| &s.phases) {
        if !present.contains(&p.phase.as_str()) {
            present.push(&p.phase);
        }
    }
    present.sort_by_key(|p| {
        PHASES
            .iter()
            .position(|(k, _, _)| k == p)
            .unwrap_or(usize::MAX)
    });
    let mut legend: Vec<(String, String, &'static str)> = present
        .iter()
        .map(|p| {
            let text = PHASES
                .iter()
                .find(|(k, _, _)| k == p)
                .map_or(p.to_string(), |(_, _, t)| t.to_string());
            (format!("phase-{}", class_name(p)), text, phase_colour(p))
        })
        .collect();
    let verdicts: Vec<Option<bool>> = e.steps.iter().map(threshold_verdict).collect();
    if verdicts.contains(&Some(true)) {
        legend.push(("held".into(), "thresholds held".into(), HELD_COLOUR));
    }
    if verdicts.contains(&Some(false)) {
        legend.push((
            "not-met".into(),
            "a threshold not met".into(),
            NOT_MET_COLOUR,
        ));
    }
    legend
}

/// `Some(true)` if every evaluated threshold held, `Some(false)` if one did
/// not, `None` if none was evaluated.
fn threshold_verdict(s: &StepEvidence) -> Option<bool> {
    let evaluated: Vec<bool> = s.thresholds.iter().filter_map(|t| t.held).collect();
    if evaluated.is_empty() {
        None
    } else {
        Some(evaluated.iter().all(|h| *h))
    }
}

fn threshold_word(t: &ThresholdEvidence) -> String {
    match (t.held, &t.error) {
        (Some(true), _) => "held".to_string(),
        (Some(false), _) => "NOT MET".to_string(),
        (None, Some(e)) => e.clone(),
        (None, None) => "not evaluated".to_string(),
    }
}

fn step(o: &mut String, index: usize, s: &StepEvidence, json: &Value) {
    let state = s.final_state.as_deref().unwrap_or("not run in this run");
    let _ = write!(
        o,
        "<section class=\"step state-{}\" id=\"step-{}\" data-step=\"{}\">\n\
         <h2><span class=\"num\">Step {}</span> <code class=\"step-name\">{}</code> \
         <span class=\"state state-{}\">{}</span></h2>\n",
        class_name(state),
        index + 1,
        escape(&s.id),
        index + 1,
        escape(&s.id),
        class_name(state),
        escape(state)
    );
    if let Some(d) = &s.detail {
        let _ = writeln!(o, "<p class=\"detail\">{}</p>", escape(d));
    }
    if let Some(r) = &s.resumed {
        let _ = writeln!(
            o,
            "<p class=\"callout resumed\"><strong>Resumed</strong> at {}: {}</p>",
            escape(&r.at),
            escape(&r.detail)
        );
    }

    // Grants.
    let g = &s.grants;
    o.push_str("<h3>Plugin, target and grants</h3>\n<table class=\"kv grants\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{v}</td></tr>", escape(k));
    };
    row(
        "Plugin",
        format!(
            "<code>{}</code> sha256 <code class=\"digest\">{}</code>",
            escape(&s.plugin),
            escape(&s.plugin_digest)
        ),
    );
    row(
        "Target",
        format!(
            "<code>{}</code> ({})",
            escape(&s.target),
            escape(&s.target_kind)
        ),
    );
    row(
        "Access",
        format!(
            "{} <span class=\"muted\">(backup and validate are always read-only)</span>",
            escape(&g.access)
        ),
    );
    let list = |items: &[String]| -> String {
        items
            .iter()
            .map(|i| format!("<code>{}</code>", escape(i)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    row(
        "Tables",
        g.tables
            .as_deref()
            .map_or("any of the target's".to_string(), list),
    );
    if let Some(k) = &g.key_prefixes {
        row("Key prefixes", list(k));
    }
    row(
        "Files",
        if g.files.is_empty() {
            "none".to_string()
        } else {
            g.files
                .iter()
                .map(|(n, a)| format!("<code>{}</code> ({})", escape(n), escape(a)))
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    row(
        "Values",
        if g.values.is_empty() {
            "none".to_string()
        } else {
            list(&g.values)
        },
    );
    row(
        "Limits",
        format!(
            "{} MiB memory · {} s per phase · {} MiB backup",
            g.memory_mib, g.phase_seconds, g.backup_mib
        ),
    );
    for (k, v) in extras(&json["grants"], GRANTS_KEYS) {
        row(&label(k), value_html(v));
    }
    o.push_str("</table>\n");

    // Phases.
    if !s.phases.is_empty() {
        let phases_json = json["phases"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        let extra_cols = extra_columns(phases_json, PHASE_KEYS);
        o.push_str(
            "<h3>Phases</h3>\n<table class=\"phases\">\n<thead><tr><th>Phase</th><th>Started</th>\
             <th>Ended</th><th class=\"num\">Duration</th><th>Ended in</th><th>Detail</th>",
        );
        for c in &extra_cols {
            let _ = write!(o, "<th>{}</th>", escape(&label(c)));
        }
        o.push_str("</tr></thead>\n<tbody>\n");
        for (i, p) in s.phases.iter().enumerate() {
            let _ = write!(
                o,
                "<tr class=\"phase-{}\" data-phase=\"{}\"><td><span class=\"swatch\" \
                 style=\"background:{}\"></span>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"num\">{}</td><td>{}</td><td>{}</td>",
                class_name(&p.phase),
                escape(&p.phase),
                phase_colour(&p.phase),
                escape(&p.phase),
                escape(&p.started_at),
                escape(p.ended_at.as_deref().unwrap_or("—")),
                escape(&duration_exact(p.duration_ms)),
                escape(p.ended_in.as_deref().unwrap_or("—")),
                escape(p.detail.as_deref().unwrap_or(""))
            );
            for c in &extra_cols {
                let _ = write!(
                    o,
                    "<td>{}</td>",
                    value_html(phases_json.get(i).map_or(&Value::Null, |p| &p[c.as_str()]))
                );
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody>\n</table>\n");
    }

    if let Some(b) = &s.backup {
        backup(o, b, &json["backup"]);
    }

    if !s.metrics.is_empty() || !s.thresholds.is_empty() {
        o.push_str("<h3>Metrics and thresholds</h3>\n");
    }
    if !s.metrics.is_empty() {
        o.push_str(
            "<table class=\"metrics\">\n<thead><tr><th>Metric</th><th class=\"num\">Value</th>\
             <th>How it was measured</th></tr></thead>\n<tbody>\n",
        );
        for m in &s.metrics {
            let _ = writeln!(
                o,
                "<tr><td><code>{}</code></td><td class=\"num\">{}</td><td>{}</td></tr>",
                escape(&m.name),
                escape(&super::number(m.value)),
                escape(&m.detail)
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
    if !s.thresholds.is_empty() {
        let thresholds_json = json["thresholds"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let extra_cols = extra_columns(thresholds_json, THRESHOLD_KEYS);
        o.push_str(
            "<table class=\"thresholds\">\n<thead><tr><th>Threshold</th><th>Result</th>\
             <th>Values it read</th>",
        );
        for c in &extra_cols {
            let _ = write!(o, "<th>{}</th>", escape(&label(c)));
        }
        o.push_str("</tr></thead>\n<tbody>\n");
        for (i, t) in s.thresholds.iter().enumerate() {
            let (class, word) = match (t.held, &t.error) {
                (Some(true), _) => ("held", "✓ held".to_string()),
                (Some(false), _) => ("not-met", "✗ NOT MET".to_string()),
                (None, Some(e)) => ("not-evaluated", e.clone()),
                (None, None) => ("not-evaluated", "not evaluated".to_string()),
            };
            let values: Vec<String> = t
                .values
                .iter()
                .map(|(k, v)| format!("{k} = {}", super::number(*v)))
                .collect();
            let _ = write!(
                o,
                "<tr class=\"threshold {class}\"><td><code>{}</code></td><td class=\"result\">{}\
                 </td><td>{}</td>",
                escape(&t.source),
                escape(&word),
                escape(&values.join(", "))
            );
            for c in &extra_cols {
                let _ = write!(
                    o,
                    "<td>{}</td>",
                    value_html(
                        thresholds_json
                            .get(i)
                            .map_or(&Value::Null, |t| &t[c.as_str()])
                    )
                );
            }
            o.push_str("</tr>\n");
        }
        o.push_str("</tbody>\n</table>\n");
    }

    gate(o, s);

    if let Some(rb) = &s.rollback {
        let ended = rb.ended_in.as_deref().unwrap_or("— (no end recorded)");
        let class = if ended == "rolled-back" { "ok" } else { "bad" };
        let _ = writeln!(
            o,
            "<h3>Rollback</h3>\n<table class=\"kv rollback\">\n<tr><th>Started</th><td>{}</td>\
             </tr>\n<tr><th>Ended in</th><td><strong class=\"{class}\">{}</strong> at {}</td></tr>\n\
             <tr><th>Took</th><td>{}</td></tr>\n<tr><th>Detail</th><td>{}</td></tr>\n</table>",
            escape(&rb.started_at),
            escape(ended),
            escape(rb.ended_at.as_deref().unwrap_or("—")),
            escape(&duration_exact(rb.duration_ms)),
            escape(rb.detail.as_deref().unwrap_or("—"))
        );
    }

    also_recorded(o, "h3", "kv extras", extras(json, STEP_KEYS));
    o.push_str("</section>\n");
}

/// Journal fields this page has no layout for, shown as a key/value table
/// under an "Also recorded" heading (nothing when there are none).
fn also_recorded(o: &mut String, heading: &str, class: &str, fields: Vec<(&str, &Value)>) {
    if fields.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "<{heading}>Also recorded</{heading}>\n<table class=\"{class}\">"
    );
    for (k, v) in fields {
        let _ = writeln!(
            o,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(&label(k)),
            value_html(v)
        );
    }
    o.push_str("</table>\n");
}

/// The band reached, the baseline it was judged against, and the
/// operators' decisions: what an approver signs.
fn gate(o: &mut String, s: &StepEvidence) {
    if let Some(b) = &s.band {
        let class = match b.action {
            crate::plan::Action::Advance => "ok",
            crate::plan::Action::Review => "review",
            crate::plan::Action::Rollback => "bad",
        };
        let _ = writeln!(
            o,
            "<p class=\"band\">Band reached: <code>{}</code> → <strong class=\"{class}\" \
             data-action=\"{}\">{}</strong></p>",
            escape(b.when.as_deref().unwrap_or("none of the bands (default)")),
            b.action.as_str(),
            b.action.as_str()
        );
    }
    if !s.baseline.is_empty() {
        let before: Vec<String> = s
            .baseline
            .iter()
            .map(|m| {
                format!(
                    "<code>baseline.{}</code> = {}",
                    escape(&m.name),
                    escape(&super::number(m.value))
                )
            })
            .collect();
        let _ = writeln!(
            o,
            "<p class=\"baseline\">Measured before migrate: {}</p>",
            before.join(", ")
        );
    }
    if !s.approvals.is_empty() {
        o.push_str(
            "<h3>Decisions</h3>\n<table class=\"approvals\">\n<thead><tr><th>Decision</th>\
             <th>By</th><th>At</th><th>Plan</th><th>Plugin</th><th>Reason</th></tr></thead>\n<tbody>\n",
        );
        for a in &s.approvals {
            let (class, word) = match a.decision {
                crate::journal::Decision::Approve => ("ok", "approved"),
                crate::journal::Decision::Reject => ("bad", "rejected"),
            };
            let _ = writeln!(
                o,
                "<tr><td><strong class=\"{class}\">{word}</strong></td><td>{}</td><td>{}</td>\
                 <td><code class=\"digest\">{}</code></td><td><code class=\"digest\">{}</code></td>\
                 <td>{}</td></tr>",
                escape(&a.by),
                escape(&a.at),
                escape(&a.plan_hash[..a.plan_hash.len().min(12)]),
                escape(&a.plugin_digest[..a.plugin_digest.len().min(12)]),
                escape(a.reason.as_deref().unwrap_or("—"))
            );
        }
        o.push_str("</tbody>\n</table>\n");
    }
}

fn backup(o: &mut String, b: &BackupEvidence, json: &Value) {
    let verified = b.verified;
    let total: u64 = b.artifacts.iter().map(|a| a.size).sum();
    let _ = writeln!(
        o,
        "<h3>Backup</h3>\n<p class=\"backup-verdict {}\">{} — {} artifact(s), {} in all; \
         migrate is {}.</p>",
        if verified { "ok" } else { "bad" },
        escape(
            b.verification
                .as_deref()
                .unwrap_or("no verification recorded")
        ),
        b.artifacts.len(),
        escape(&super::bytes(total)),
        escape(&b.change)
    );
    o.push_str(
        "<table class=\"artifacts\">\n<thead><tr><th>Artifact</th><th>sha256</th>\
         <th class=\"num\">Size</th></tr></thead>\n<tbody>\n",
    );
    for a in &b.artifacts {
        let _ = writeln!(
            o,
            "<tr><td><code>{}</code></td><td><code class=\"digest\">{}</code></td>\
             <td class=\"num\" title=\"{} bytes\">{}</td></tr>",
            escape(&a.name),
            escape(&a.digest),
            a.size,
            escape(&super::bytes(a.size))
        );
    }
    o.push_str("</tbody>\n</table>\n");
    let more = extras(json, BACKUP_KEYS);
    if !more.is_empty() {
        o.push_str("<table class=\"kv extras\">\n");
        for (k, v) in more {
            let _ = writeln!(
                o,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(&label(k)),
                value_html(v)
            );
        }
        o.push_str("</table>\n");
    }
}

// ---- fields without a layout of their own ---------------------------------

/// The JSON keys each part of the evidence has a layout for; any other key
/// is shown generically.
const EVIDENCE_KEYS: &[&str] = &["plan", "run", "steps"];
const RUN_KEYS: &[&str] = &[
    "id",
    "command",
    "plan_hash",
    "started_at",
    "finished_at",
    "outcome",
];
const PLAN_KEYS: &[&str] = &["name", "hash", "changed_since_run"];
const STEP_KEYS: &[&str] = &[
    "id",
    "plugin",
    "plugin_digest",
    "target",
    "target_kind",
    "grants",
    "phases",
    "backup",
    "metrics",
    "thresholds",
    "rollback",
    "final_state",
    "detail",
    "cause",
    "resumed",
    "band",
    "baseline",
    "approvals",
];
const GRANTS_KEYS: &[&str] = &[
    "access",
    "tables",
    "key_prefixes",
    "files",
    "values",
    "memory_mib",
    "phase_seconds",
    "backup_mib",
];
const PHASE_KEYS: &[&str] = &[
    "phase",
    "started_at",
    "ended_at",
    "duration_ms",
    "ended_in",
    "detail",
];
const BACKUP_KEYS: &[&str] = &["artifacts", "verification", "verified", "change"];
const THRESHOLD_KEYS: &[&str] = &["source", "held", "values", "error"];

/// Whether a value says nothing (absent, null, empty).
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => false,
    }
}

/// The fields of an object that have no layout of their own and say something.
fn extras<'a>(v: &'a Value, known: &[&str]) -> Vec<(&'a str, &'a Value)> {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !known.contains(&k.as_str()) && !is_empty(v))
                .map(|(k, v)| (k.as_str(), v))
                .collect()
        })
        .unwrap_or_default()
}

/// The unknown keys any of these objects has, for extra table columns.
fn extra_columns(rows: &[Value], known: &[&str]) -> Vec<String> {
    let mut cols = BTreeSet::new();
    for r in rows {
        for (k, _) in extras(r, known) {
            cols.insert(k.to_string());
        }
    }
    cols.into_iter().collect()
}

/// `watch_window` → `Watch window`.
fn label(key: &str) -> String {
    let spaced = key.replace('_', " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// Any JSON value as HTML: objects as key/value tables, lists of objects as
/// tables with a column per key, other lists as lists, text escaped.
fn value_html(v: &Value) -> String {
    match v {
        Value::Null => "—".to_string(),
        Value::Bool(true) => "yes".to_string(),
        Value::Bool(false) => "no".to_string(),
        Value::Number(n) => n.as_f64().map_or(n.to_string(), super::number),
        Value::String(s) => escape(s),
        Value::Array(a) if a.is_empty() => "none".to_string(),
        Value::Array(a) if a.iter().all(Value::is_object) => {
            let cols = extra_columns(a, &[]);
            let mut o = String::from("<table class=\"generic\"><thead><tr>");
            for c in &cols {
                let _ = write!(o, "<th>{}</th>", escape(&label(c)));
            }
            o.push_str("</tr></thead><tbody>");
            for r in a {
                o.push_str("<tr>");
                for c in &cols {
                    let _ = write!(o, "<td>{}</td>", value_html(&r[c.as_str()]));
                }
                o.push_str("</tr>");
            }
            o.push_str("</tbody></table>");
            o
        }
        Value::Array(a) => {
            let items: Vec<String> = a
                .iter()
                .map(|i| format!("<li>{}</li>", value_html(i)))
                .collect();
            format!("<ul class=\"generic\">{}</ul>", items.concat())
        }
        Value::Object(m) => {
            let mut o = String::from("<table class=\"kv generic\">");
            for (k, v) in m {
                let _ = write!(
                    o,
                    "<tr><th>{}</th><td>{}</td></tr>",
                    escape(&label(k)),
                    value_html(v)
                );
            }
            o.push_str("</table>");
            o
        }
    }
}

/// The page's only stylesheet. System fonts only: nothing is fetched.
const STYLE: &str = r#"
:root { --ink: #1b1f24; --muted: #5b636e; --rule: #d5dae0; --band: #f5f7f9;
  --ok: #1b7837; --bad: #b2182b; --warn: #9a6700; }
* { box-sizing: border-box; }
html { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", "Liberation Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 28px 32px 40px; }
code, .digest { font-family: ui-monospace, "DejaVu Sans Mono", "Liberation Mono", Menlo, monospace; font-size: 0.92em; }
.digest { font-size: 12px; word-break: break-all; color: #33383f; }
h1 { font-size: 26px; margin: 2px 0 10px; }
h1 .name { font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
h2 { font-size: 19px; margin: 30px 0 8px; padding-bottom: 4px; border-bottom: 2px solid var(--ink); }
h3 { font-size: 14px; margin: 18px 0 6px; text-transform: uppercase; letter-spacing: 0.04em; color: var(--muted); }
.kicker { margin: 0; color: var(--muted); text-transform: uppercase; letter-spacing: 0.08em; font-size: 12px; }
.note, .muted { color: var(--muted); }
.note { margin: 0 0 8px; font-size: 13px; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; vertical-align: top; padding: 5px 10px 5px 0; border-bottom: 1px solid var(--rule); }
thead th { font-size: 12px; color: var(--muted); font-weight: 600; border-bottom: 1px solid #9aa3ad; }
table.kv > tbody > tr > th, table.kv > tr > th { width: 160px; font-weight: 600; color: #3a414a; }
td.num, th.num { text-align: right; white-space: nowrap; }
table.phases td:nth-child(-n+5) { white-space: nowrap; }
table.generic { margin: 0; }
ul.generic { margin: 0; padding-left: 18px; }
.verdict { display: inline-block; margin: 0 0 12px; padding: 6px 14px; border-radius: 4px;
  background: #eef0f2; border-left: 6px solid #8a939d; font-size: 15px; }
.verdict.outcome-ok { background: #e8f4ec; border-color: var(--ok); }
.verdict.outcome-step-failed, .verdict.outcome-stopped { background: #fdf3e4; border-color: #d58a00; }
.verdict.outcome-needs-attention, .verdict.outcome-refused { background: #fbe9eb; border-color: var(--bad); }
.state { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
  background: #eef0f2; color: #3a414a; vertical-align: middle; margin-right: 4px; }
.state.state-completed { background: #e3f1e7; color: var(--ok); }
.state.state-rolled-back { background: #fdf0dc; color: #8a5300; }
.state.state-failed, .state.state-rollback-failed { background: #fbe4e6; color: var(--bad); }
h2 .num { color: var(--muted); font-weight: 400; margin-right: 6px; }
h2 code.step-name { font-size: 18px; }
h2 .state { margin-left: 8px; }
.detail { margin: 4px 0 0; }
.callout { padding: 8px 12px; border-left: 4px solid #56b4e9; background: #eef7fc; }
.warn { color: var(--warn); }
.ok { color: var(--ok); }
.bad { color: var(--bad); }
.review { color: #b8860b; }
.backup-verdict.ok::before { content: "✓ "; font-weight: 700; }
.backup-verdict.bad::before { content: "✗ "; font-weight: 700; }
.backup-verdict { margin: 2px 0 6px; }
tr.threshold.held .result { color: var(--ok); font-weight: 600; }
tr.threshold.not-met .result { color: var(--bad); font-weight: 700; }
tr.threshold.not-met { background: #fdf2f3; }
tr.threshold.not-evaluated .result { color: var(--muted); }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px; vertical-align: -1px; }
#timeline { display: block; margin: 6px 0 4px; font-size: 12px; }
#timeline text { fill: var(--ink); }
#timeline .row-bg { fill: #fff; }
#timeline .row:nth-of-type(even) .row-bg { fill: var(--band); }
#timeline .step-id { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; font-weight: 700; }
#timeline .step-state { font-size: 11px; fill: var(--muted); }
#timeline .step-state.state-completed { fill: var(--ok); }
#timeline .step-state.state-rolled-back { fill: #8a5300; }
#timeline .step-state.state-failed, #timeline .step-state.state-rollback-failed { fill: var(--bad); }
#timeline .grid { stroke: #e3e7eb; stroke-width: 1; }
#timeline .axis line { stroke: #9aa3ad; }
#timeline .axis text { fill: var(--muted); font-size: 11px; }
#timeline .axis .axis-title { font-size: 11.5px; }
#timeline .bar { stroke: rgba(0,0,0,0.25); stroke-width: 0.5; }
#timeline .bar.open { stroke: var(--ink); stroke-dasharray: 3 2; stroke-width: 1; fill-opacity: 0.45; }
#timeline .bar-label { fill: #fff; font-size: 11px; font-weight: 600; pointer-events: none; }
#timeline .idle { fill: var(--muted); font-style: italic; }
section.step { break-inside: auto; }
section.step h2 { break-after: avoid; }
table, .callout, #timeline { break-inside: avoid; }
footer { margin-top: 36px; padding-top: 10px; border-top: 1px solid var(--rule); color: var(--muted); font-size: 12px; }
@media print {
  main { max-width: none; padding: 0; }
  body { font-size: 11pt; }
  h2 { margin-top: 18px; }
  section.step { break-before: auto; }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::ArtifactRef;
    use crate::journal::RunRecord;
    use crate::report::evidence::{Grants, PlanEvidence, ResumedEvidence};
    use crate::runtime::Metric;

    fn phase(name: &str, start: &str, end: Option<&str>, ms: Option<i64>) -> PhaseTiming {
        PhaseTiming {
            phase: name.into(),
            started_at: start.into(),
            ended_at: end.map(Into::into),
            duration_ms: ms,
            ended_in: end.map(|_| "next".into()),
            detail: Some("fine".into()),
        }
    }

    fn step(id: &str) -> StepEvidence {
        StepEvidence {
            id: id.into(),
            plugin: "sqlite".into(),
            plugin_digest: "ab".repeat(32),
            target: "shop".into(),
            target_kind: "sqlite".into(),
            grants: Grants {
                access: "read-write".into(),
                tables: Some(vec!["customers".into()]),
                memory_mib: 64,
                phase_seconds: 30,
                backup_mib: 256,
                ..Grants::default()
            },
            phases: vec![],
            backup: None,
            metrics: vec![],
            // Fields added later default to absent.
            ..StepEvidence::default()
        }
    }

    fn evidence(steps: Vec<StepEvidence>) -> Evidence {
        Evidence {
            plan: PlanEvidence {
                name: "shop".into(),
                hash: "h".into(),
                changed_since_run: false,
            },
            run: RunRecord {
                id: "run-1".into(),
                command: "run".into(),
                plan_hash: "h".into(),
                started_at: "2026-01-01T00:00:00Z".into(),
                finished_at: Some("2026-01-01T00:00:03Z".into()),
                outcome: Some("step-failed".into()),
            },
            steps,
        }
    }

    #[test]
    fn escape_covers_the_characters_that_end_text_or_an_attribute() {
        assert_eq!(
            escape(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain-step_1"), "plain-step_1");
    }

    #[test]
    fn journal_and_plugin_text_renders_as_text_never_as_markup() {
        let evil = "<script>alert(1)</script>";
        let mut s = step(evil);
        s.final_state = Some("completed\"><img src=x onerror=alert(2)>".into());
        s.detail = Some(format!("detail {evil}"));
        s.phases = vec![phase(
            "backup",
            "2026-01-01T00:00:00Z",
            Some("2026-01-01T00:00:01Z"),
            Some(1000),
        )];
        s.metrics = vec![Metric {
            name: "m<b>".into(),
            value: 1.0,
            detail: format!("counted {evil}"),
        }];
        s.thresholds = vec![ThresholdEvidence {
            source: "m < 2 && '\"'".into(),
            held: Some(true),
            values: [("m".to_string(), 1.0)].into(),
            error: None,
        }];
        s.backup = Some(BackupEvidence {
            artifacts: vec![ArtifactRef {
                name: "<iframe>".into(),
                digest: "0".repeat(64),
                size: 10,
            }],
            verification: Some("backup verified <b>".into()),
            verified: true,
            change: "transactional".into(),
        });
        s.resumed = Some(ResumedEvidence {
            at: "2026-01-01T00:00:00Z".into(),
            detail: "resumed: <svg onload=alert(3)>".into(),
        });
        let mut e = evidence(vec![s]);
        e.plan.name = "</title><script>x()</script>".into();
        let page = html(&e);
        for markup in ["<script", "<img", "<iframe", "<b>", "<svg onload", "<a "] {
            assert!(!page.contains(markup), "{markup} reached the page:\n{page}");
        }
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("data-step=\"&lt;script&gt;alert(1)&lt;/script&gt;\""));
        assert!(page.contains("counted &lt;script&gt;"));
        assert!(page.contains("m &lt; 2 &amp;&amp; &#39;&quot;&#39;"));
        // The only element ids are the page's own, never a journal string.
        assert!(page.contains("id=\"step-1\""));
    }

    #[test]
    fn one_bar_per_phase_placed_on_the_time_since_the_run_started() {
        let mut a = step("a");
        a.final_state = Some("completed".into());
        a.phases = vec![
            phase(
                "backup",
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:00.500Z"),
                Some(500),
            ),
            phase(
                "migrate",
                "2026-01-01T00:00:00.500Z",
                Some("2026-01-01T00:00:02Z"),
                Some(1500),
            ),
        ];
        let mut b = step("b");
        b.phases = vec![phase("rollback", "2026-01-01T00:00:02Z", None, None)];
        let page = html(&evidence(vec![a, b, step("c")]));
        assert!(page.contains("<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"timeline\""));
        assert_eq!(page.matches("<rect class=\"bar ").count(), 3);
        assert_eq!(page.matches("<g class=\"row ").count(), 3);
        assert!(page.contains("data-step=\"a\" data-phases=\"2\""));
        assert!(page.contains("data-step=\"c\" data-phases=\"0\""));
        // The run took 3 s: ticks every 500 ms up to 3 s; migrate starts at 500 ms.
        assert!(page.contains("data-tick-ms=\"500\""));
        assert!(page.contains("data-domain-ms=\"3000\""));
        assert!(
            page.contains("data-phase=\"migrate\" data-start-ms=\"500\" data-duration-ms=\"1500\"")
        );
        let x = |ms: f64| LABEL_WIDTH + ms / 3000.0 * (SVG_WIDTH - LABEL_WIDTH - RIGHT_PAD);
        assert!(page.contains(&format!("x=\"{:.2}\"", x(500.0))));
        // An unfinished phase is drawn open to the last known time, and says so.
        assert!(page.contains("class=\"bar phase-rollback open\""));
        assert!(page.contains("no end recorded"));
        assert!(page.contains("no phase ran in this run"));
        // Exact durations in the tooltips.
        assert!(page.contains("<title>migrate of a: 1.50 s (1500 ms)"));
        // No script, nothing fetched.
        for external in ["<script", "src=", "href=", "@import", "url("] {
            assert!(!page.contains(external), "{external}");
        }
    }

    #[test]
    fn ticks_are_round_and_labelled_in_the_unit_of_the_run() {
        assert_eq!(tick_step(3000), 500);
        assert_eq!(tick_step(40), 5);
        assert_eq!(tick_step(0), 1);
        assert_eq!(tick_step(95_000), 20_000);
        assert_eq!(tick_label(0, 500, 3000), "0");
        assert_eq!(tick_label(1500, 500, 3000), "1.5 s");
        assert_eq!(tick_label(250, 50, 400), "250 ms");
        assert_eq!(tick_label(120_000, 60_000, 600_000), "2 min");
        assert_eq!(tick_label(40_000, 20_000, 100_000), "40 s");
    }

    #[test]
    fn fields_without_a_layout_are_still_shown_escaped() {
        let v = serde_json::json!({
            "id": "known",
            "tier": "review",
            "signoffs": [{"who": "<ana>", "at": "2026-01-01T00:00:00Z"}],
            "watch": {"checks": 3, "passed": true},
            "nothing": null,
            "empty": [],
        });
        let more = extras(&v, STEP_KEYS);
        let keys: Vec<&str> = more.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["signoffs", "tier", "watch"]);
        let approvals = value_html(more[0].1);
        assert!(approvals.contains("<th>At</th><th>Who</th>"), "{approvals}");
        assert!(approvals.contains("<td>&lt;ana&gt;</td>"), "{approvals}");
        assert_eq!(
            value_html(more[2].1),
            "<table class=\"kv generic\"><tr><th>Checks</th><td>3</td></tr><tr><th>Passed</th>\
             <td>yes</td></tr></table>"
        );
        assert_eq!(label("watch_window"), "Watch window");
    }
}
