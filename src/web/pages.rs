//! The dashboard's HTML: a cluster overview, a job page and a worker page,
//! rendered on the server from [`super::cluster`]'s documents.
//!
//! Owns: [`page`] (the frame: header, the `<main id="live">` part that
//! `assets/app.js` replaces every 2 s with `?part=live`, footer) and each
//! page's live part, with the job's charts drawn here as SVG (records per
//! second in and out, lag; last 5 minutes). Stable hooks for tests and
//! scripts: `table#workers tr[data-worker]`, `table#gone tr[data-worker]`,
//! `table#jobs tr[data-job] a.job-link`, `table#tasks tr[data-task]` with
//! cells `td.state`, `td.worker`, `td.rate-in`, `td.rate-out`, `td.lag`.
//! Must never: render a cancel or rescale button unless the worker runs with
//! `--http-admin`, or put unescaped text from ZooKeeper or a worker into the
//! page.

use std::fmt::Write as _;

use super::cluster::{ClusterView, JobDetail, Point, WorkerDetail};
use crate::coord::model::now_ms;

/// Escapes text for HTML content and attribute values.
pub fn esc(s: &str) -> String {
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

/// Percent-encodes a path segment (names are `[A-Za-z0-9._-]`, but be safe).
fn seg(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn rate(x: f64) -> String {
    let x = x + 0.0; // -0.0 shows as 0.0
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// `HH:MM:SS` UTC of a time in ms since the Unix epoch.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn ago(ms: u64, now: u64) -> String {
    let d = now.saturating_sub(ms) / 1000;
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        _ => format!("{} h ago", d / 3600),
    }
}

fn state_badge(state: &str) -> String {
    format!(
        "<span class=\"badge st-{}\">{}</span>",
        esc(&state.to_lowercase()),
        esc(state)
    )
}

/// A whole page around its live part.
pub fn page(title: &str, admin: bool, live: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t}</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
<body data-admin=\"{admin}\"><header><a class=\"home\" href=\"/\">weir</a> \
<span class=\"title\">{t}</span><span class=\"mode {mode_class}\">{mode}</span></header>\
<div id=\"banner\" hidden></div>\
<main id=\"live\" data-poll=\"2000\">{live}</main>\
<footer>updated <span id=\"updated\">{now} UTC</span> &middot; every 2 s &middot; \
<a href=\"/metrics\">/metrics</a> &middot; <a href=\"/api/cluster\">/api/cluster</a> &middot; \
<a href=\"/api/tasks\">/api/tasks</a> &middot; <a href=\"/healthz\">/healthz</a></footer>\
<script src=\"/assets/app.js\"></script></body></html>\n",
        t = esc(title),
        mode = if admin { "admin" } else { "read-only" },
        mode_class = if admin { "admin" } else { "ro" },
        now = clock(now_ms()),
    )
}

/// The live part when the data could not be read.
pub fn error_live(message: &str) -> String {
    format!(
        "<p class=\"error\" id=\"error\">{}</p><p><a href=\"/\">cluster overview</a></p>",
        esc(message)
    )
}

/// The cluster overview: workers (and the ones gone), jobs.
pub fn overview_live(c: &ClusterView) -> String {
    let now = c.at_ms;
    let mut h = String::new();
    let _ = write!(
        h,
        "<h1>Cluster</h1><p class=\"meta\">served by <a href=\"/workers/{s}\">{se}</a> &middot; leader: {leader} &middot; \
{nw} live worker(s) &middot; {nj} job(s)</p>",
        s = seg(&c.served_by),
        se = esc(&c.served_by),
        leader = c
            .leader
            .as_ref()
            .map_or("none yet".to_string(), |l| format!(
                "<a href=\"/workers/{}\">{}</a>",
                seg(l),
                esc(l)
            )),
        nw = c.workers.len(),
        nj = c.jobs.len(),
    );
    h.push_str("<h2>Jobs</h2><table id=\"jobs\"><thead><tr><th>job</th><th>type</th><th>state</th>\
<th>tasks running</th><th>parallelism</th><th>records in/s</th><th>records out/s</th><th>records in</th>\
<th>records out</th><th>lag</th><th>restarts</th></tr></thead><tbody>");
    for j in &c.jobs {
        let _ = write!(
            h,
            "<tr data-job=\"{n}\"><td><a class=\"job-link\" href=\"/jobs/{s}\">{n}</a></td><td>{t}</td>\
<td class=\"state\">{st}</td><td>{r}/{tt}</td><td>{p}</td><td class=\"rate-in\">{ri}</td><td class=\"rate-out\">{ro}</td>\
<td>{i}</td><td>{o}</td><td class=\"lag\">{l}</td><td>{rs}</td></tr>",
            n = esc(&j.name),
            s = seg(&j.name),
            t = esc(&j.job_type),
            st = state_badge(&j.state),
            r = j.running,
            tt = j.tasks,
            p = j.parallelism,
            ri = rate(j.records_in_per_s),
            ro = rate(j.records_out_per_s),
            i = j.records_in,
            o = j.records_out,
            l = j.lag,
            rs = j.restarts,
        );
        if let Some(e) = &j.error {
            let _ = write!(
                h,
                "<tr class=\"error\"><td colspan=\"11\">{}</td></tr>",
                esc(e)
            );
        }
    }
    if c.jobs.is_empty() {
        h.push_str(
            "<tr><td colspan=\"11\">no job (submit one with <code>weir submit</code>)</td></tr>",
        );
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Workers</h2><table id=\"workers\"><thead><tr><th>worker</th><th>address</th><th>status</th>\
<th>tasks assigned</th><th>running</th><th>capacity</th><th>records in/s</th><th>records out/s</th>\
<th>job types</th><th>version</th></tr></thead><tbody>");
    for w in &c.workers {
        let status = if !w.reachable {
            format!(
                "<span class=\"badge st-failed\" title=\"{}\">unreachable</span>",
                esc(w.unreachable_reason.as_deref().unwrap_or(""))
            )
        } else if w.leader {
            "<span class=\"badge st-running\">live</span> <span class=\"badge leader\">leader</span>"
                .to_string()
        } else {
            "<span class=\"badge st-running\">live</span>".to_string()
        };
        let _ = write!(
            h,
            "<tr data-worker=\"{id}\"><td><a class=\"worker-link\" href=\"/workers/{s}\">{id}</a></td>\
<td>{a}</td><td class=\"status\">{status}</td><td>{as_}</td><td>{r}</td><td>{cap}</td><td class=\"rate-in\">{ri}</td>\
<td class=\"rate-out\">{ro}</td><td>{jt}</td><td>{v}</td></tr>",
            id = esc(&w.id),
            s = seg(&w.id),
            a = if w.address.is_empty() {
                "-".to_string()
            } else {
                esc(&w.address)
            },
            as_ = w.assigned,
            r = w.running,
            cap = w.capacity,
            ri = rate(w.records_in_per_s),
            ro = rate(w.records_out_per_s),
            jt = esc(&if w.job_types.is_empty() {
                "any".to_string()
            } else {
                w.job_types.join(", ")
            }),
            v = esc(&w.version),
        );
    }
    if c.workers.is_empty() {
        h.push_str("<tr><td colspan=\"10\">no live worker</td></tr>");
    }
    h.push_str("</tbody></table>");
    if !c.gone.is_empty() {
        h.push_str("<h2>Gone</h2><p class=\"meta\">workers this dashboard saw registered that are not any more (their tasks move to the others)</p>\
<table id=\"gone\"><thead><tr><th>worker</th><th>last address</th><th>last seen</th></tr></thead><tbody>");
        for g in &c.gone {
            let _ = write!(
                h,
                "<tr data-worker=\"{id}\"><td><a href=\"/workers/{s}\">{id}</a> <span class=\"badge st-failed\">gone</span></td>\
<td>{a}</td><td>{t} UTC ({ago})</td></tr>",
                id = esc(&g.id),
                s = seg(&g.id),
                a = esc(&g.address),
                t = clock(g.last_seen_ms),
                ago = ago(g.last_seen_ms, now),
            );
        }
        h.push_str("</tbody></table>");
    }
    h
}

/// An SVG line chart of `series` (each: css class, label, values) over `points`' times.
/// One line of a chart: css class, label, value of a point.
type Series<'a> = (&'a str, &'a str, fn(&Point) -> f64);

fn chart(title: &str, points: &[Point], series: &[Series<'_>]) -> String {
    const W: f64 = 640.0;
    const H: f64 = 150.0;
    const L: f64 = 56.0;
    const B: f64 = 20.0;
    let mut out = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption><svg viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\">",
        esc(title)
    );
    let Some(first) = points.first() else {
        out.push_str(&format!(
            "<text x=\"{}\" y=\"{}\" class=\"empty\">no samples yet</text></svg></figure>",
            W / 2.0 - 50.0,
            H / 2.0
        ));
        return out;
    };
    let last = points.last().unwrap_or(first);
    let t0 = last
        .at_ms
        .saturating_sub(crate::service::view::HISTORY_MS)
        .min(first.at_ms);
    let span = (last.at_ms.saturating_sub(t0)).max(1) as f64;
    let max = series
        .iter()
        .flat_map(|(_, _, f)| points.iter().map(f))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |t: u64| L + (t.saturating_sub(t0)) as f64 / span * (W - L - 8.0);
    let y = |v: f64| 8.0 + (1.0 - v / max) * (H - B - 8.0);
    // Axes and gridlines: 0, max/2, max; times at both ends.
    for frac in [0.0, 0.5, 1.0] {
        let v = max * frac;
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{L}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - 8.0,
            L - 4.0,
            y(v) + 4.0,
            rate(v),
            y = y(v),
        );
    }
    let _ = write!(
        out,
        "<text class=\"axis\" x=\"{L}\" y=\"{}\">{}</text><text class=\"axis\" x=\"{}\" y=\"{}\" text-anchor=\"end\">{} UTC</text>",
        H - 4.0,
        clock(t0),
        W - 8.0,
        H - 4.0,
        clock(last.at_ms)
    );
    for (i, (class, label, f)) in series.iter().enumerate() {
        let pts: Vec<String> = points
            .iter()
            .map(|p| format!("{:.1},{:.1}", x(p.at_ms), y(f(p))))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"{class}\" fill=\"none\" points=\"{}\"/><text class=\"legend {class}\" x=\"{}\" y=\"18\">{}: {}</text>",
            pts.join(" "),
            L + 8.0 + 170.0 * i as f64,
            esc(label),
            rate(f(last)),
        );
    }
    out.push_str("</svg></figure>");
    out
}

/// The job page: summary, charts, tasks, stages, checkpoints, errors.
pub fn job_live(j: &JobDetail) -> String {
    let s = &j.summary;
    let now = j.at_ms;
    let mut h = String::new();
    let cfg: Vec<String> = j
        .config
        .iter()
        .map(|(k, v)| format!("{}={}", esc(k), esc(v)))
        .collect();
    let _ = write!(
        h,
        "<h1>Job <span id=\"job-name\">{n}</span> {st}</h1><p class=\"meta\">type {t} &middot; parallelism {p} &middot; \
epoch {e} &middot; {r}/{tt} tasks running &middot; <span id=\"job-rate-in\">{ri}</span> records in/s &middot; \
{ro} records out/s &middot; lag {l} &middot; {cfg}</p>",
        n = esc(&s.name),
        st = state_badge(&s.state),
        t = esc(&s.job_type),
        p = s.parallelism,
        e = s.epoch,
        r = s.running,
        tt = s.tasks,
        ri = rate(s.records_in_per_s),
        ro = rate(s.records_out_per_s),
        l = s.lag,
        cfg = cfg.join(" "),
    );
    if j.admin {
        let _ = write!(
            h,
            "<p class=\"actions\"><button data-action=\"rescale\" data-job=\"{n}\" data-parallelism=\"{p}\">Rescale&hellip;</button> \
<button class=\"danger\" data-action=\"cancel\" data-job=\"{n}\">Cancel job</button></p>",
            n = esc(&s.name),
            p = s.parallelism
        );
    }
    h.push_str("<div class=\"charts\">");
    h.push_str(&chart(
        "records per second (last 5 minutes)",
        &j.history,
        &[
            ("in", "in", |p| p.records_in_per_s),
            ("out", "out", |p| p.records_out_per_s),
        ],
    ));
    h.push_str(&chart(
        "lag, records (last 5 minutes)",
        &j.history,
        &[("lag", "lag", |p| p.lag as f64)],
    ));
    h.push_str("</div>");
    h.push_str("<h2>Tasks</h2><table id=\"tasks\"><thead><tr><th>task</th><th>worker</th><th>state</th><th>epoch</th>\
<th>records in/s</th><th>records out/s</th><th>records in</th><th>records out</th><th>lag</th><th>backpressure</th>\
<th>watermark</th><th>late</th><th>dead letters</th><th>restarts</th><th>last error</th></tr></thead><tbody>");
    for t in &j.tasks {
        let worker = match &t.worker {
            None => "-".to_string(),
            Some(w) if t.worker_reachable => {
                format!("<a href=\"/workers/{}\">{}</a>", seg(w), esc(w))
            }
            Some(w) => format!(
                "<a href=\"/workers/{}\">{}</a> <span class=\"badge st-failed\">unreachable</span>",
                seg(w),
                esc(w)
            ),
        };
        let _ = write!(
            h,
            "<tr data-task=\"{id}\" class=\"{live}\"><td>{id}{stage}</td><td class=\"worker\" data-worker=\"{wid}\">{worker}</td>\
<td class=\"state\" data-state=\"{sraw}\">{st}</td><td>{e}</td><td class=\"rate-in\">{ri}</td><td class=\"rate-out\">{ro}</td>\
<td>{i}</td><td>{o}</td><td class=\"lag\">{l}</td><td>{bp:.1} s</td><td>{wm}</td><td>{late}</td><td>{dl}</td><td>{rs}</td><td class=\"err\" title=\"{errt}\">{err}</td></tr>",
            id = esc(&t.task),
            stage = if t.job_stage.is_empty() {
                String::new()
            } else {
                format!(" <small class=\"stage\">{}</small>", esc(&t.job_stage))
            },
            live = if t.live { "live" } else { "zk" },
            wid = esc(t.worker.as_deref().unwrap_or("")),
            sraw = esc(&t.state),
            st = state_badge(&t.state),
            e = t.epoch,
            ri = rate(t.records_in_per_s),
            ro = if t.live { rate(t.records_out_per_s) } else { "-".into() },
            i = t.records_in,
            o = t.records_out,
            l = t.lag,
            bp = t.backpressure_ms as f64 / 1000.0,
            wm = t.watermark.map_or("-".to_string(), |w| if w >= 0 {
                clock(w as u64)
            } else {
                w.to_string()
            }),
            late = t.late_records,
            dl = t.dead_letters,
            rs = t.restarts,
            errt = t.last_error.as_ref().map_or(String::new(), |e| esc(&e.message)),
            err = t.last_error.as_ref().map_or(String::new(), |e| format!(
                "{} <span class=\"when\">({} UTC)</span>",
                esc(&e.message),
                clock(e.at_ms)
            )),
        );
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Stages</h2><table id=\"stages\"><thead><tr><th>stage</th><th>instances</th><th>records in</th>\
<th>records out</th><th>backpressure</th><th>watermark</th><th>late</th><th>dead letters</th></tr></thead><tbody>");
    for s in &j.stages {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.1} s</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&s.stage),
            s.instances,
            s.records_in,
            s.records_out,
            s.backpressure_ms as f64 / 1000.0,
            s.watermark.map_or("-".to_string(), |w| if w >= 0 {
                clock(w as u64)
            } else {
                w.to_string()
            }),
            s.late_records,
            s.dead_letters
        );
    }
    if j.stages.is_empty() {
        h.push_str("<tr><td colspan=\"8\">no running task to read stages from</td></tr>");
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Checkpoints</h2><table id=\"checkpoints\"><thead><tr><th>task</th><th>latest</th><th>completed</th>\
<th>duration</th><th>state</th><th>failed</th><th>recorded in ZooKeeper (restores from)</th></tr></thead><tbody>");
    let mut any = false;
    for t in &j.tasks {
        if t.checkpoint.is_none() && t.checkpoint_failures == 0 && t.recorded_checkpoint.is_none() {
            continue;
        }
        let recorded = t.recorded_checkpoint.as_ref().map_or("-".to_string(), |r| {
            format!(
                "{} by {} (epoch {}) at {} UTC",
                r.id,
                esc(&r.worker),
                r.epoch,
                clock(r.completed_at_ms)
            )
        });
        any = true;
        let (id, at, dur, bytes) =
            t.checkpoint
                .as_ref()
                .map_or(("-".into(), "-".into(), "-".into(), "-".into()), |c| {
                    (
                        c.id.to_string(),
                        format!(
                            "{} UTC ({})",
                            clock(c.completed_at_ms),
                            ago(c.completed_at_ms, now)
                        ),
                        format!("{} ms", c.duration_ms),
                        format!("{} B", c.state_bytes),
                    )
                });
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{id}</td><td>{at}</td><td>{dur}</td><td>{bytes}</td><td>{}</td><td>{recorded}</td></tr>",
            esc(&t.task),
            t.checkpoint_failures
        );
    }
    if !any {
        h.push_str(
            "<tr><td colspan=\"7\">no checkpoint (the job does not checkpoint durably)</td></tr>",
        );
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Errors</h2><table id=\"errors\"><thead><tr><th>when</th><th>task</th><th>worker</th><th>error</th></tr></thead><tbody>");
    for e in &j.errors {
        let _ = write!(
            h,
            "<tr><td>{} UTC ({})</td><td>{}</td><td>{}</td><td class=\"err\">{}</td></tr>",
            clock(e.at_ms),
            ago(e.at_ms, now),
            esc(&e.task),
            esc(e.worker.as_deref().unwrap_or("-")),
            esc(&e.message)
        );
    }
    if j.errors.is_empty() {
        h.push_str("<tr><td colspan=\"4\">no error</td></tr>");
    }
    h.push_str("</tbody></table>");
    h
}

/// The worker page: status, the tasks ZooKeeper assigns to it, its own view of them.
pub fn worker_live(w: &WorkerDetail) -> String {
    let mut h = String::new();
    match (&w.worker, &w.gone) {
        (Some(s), _) => {
            let _ = write!(
                h,
                "<h1>Worker <span id=\"worker-id\">{id}</span> {badge}{leader}</h1><p class=\"meta\">address {a} &middot; \
session: {sess} &middot; capacity {cap} &middot; {as_} task(s) assigned, {r} running &middot; {ri} records in/s &middot; \
job types {jt} &middot; version {v}</p>",
                id = esc(&s.id),
                badge = if s.reachable {
                    "<span class=\"badge st-running\">live</span>".to_string()
                } else {
                    format!(
                        "<span class=\"badge st-failed\">unreachable</span> <span class=\"when\">{}</span>",
                        esc(s.unreachable_reason.as_deref().unwrap_or(""))
                    )
                },
                leader = if s.leader {
                    " <span class=\"badge leader\">leader</span>"
                } else {
                    ""
                },
                a = esc(&s.address),
                sess = esc(&s.session),
                cap = s.capacity,
                as_ = s.assigned,
                r = s.running,
                ri = rate(s.records_in_per_s),
                jt = esc(&s.job_types.join(", ")),
                v = esc(&s.version),
            );
        }
        (None, Some(g)) => {
            let _ = write!(
                h,
                "<h1>Worker <span id=\"worker-id\">{}</span> <span class=\"badge st-failed\">gone</span></h1>\
<p class=\"meta\">last seen {} UTC at {}; its tasks move to the live workers</p>",
                esc(&g.id),
                clock(g.last_seen_ms),
                esc(&g.address)
            );
        }
        (None, None) => h.push_str("<h1>Worker</h1>"),
    }
    h.push_str("<h2>Tasks</h2><table id=\"tasks\"><thead><tr><th>task</th><th>job</th><th>type</th><th>state</th>\
<th>epoch</th><th>records in/s</th><th>records out/s</th><th>records in</th><th>records out</th><th>lag</th>\
<th>backpressure</th><th>restarts</th><th>last error</th></tr></thead><tbody>");
    for t in &w.tasks {
        let st = format!("{:?}", t.state).to_uppercase();
        let _ = write!(
            h,
            "<tr data-task=\"{id}\"><td>{id}</td><td><a href=\"/jobs/{js}\">{j}</a></td><td>{ty}</td><td class=\"state\" data-state=\"{st}\">{badge}</td>\
<td>{e}</td><td class=\"rate-in\">{ri}</td><td class=\"rate-out\">{ro}</td><td>{i}</td><td>{o}</td><td class=\"lag\">{l}</td>\
<td>{bp:.1} s</td><td>{rs}</td><td class=\"err\" title=\"{errt}\">{err}</td></tr>",
            id = esc(&t.task),
            js = seg(&t.job),
            j = esc(&t.job),
            ty = esc(&t.job_type),
            badge = state_badge(&st),
            e = t.epoch,
            ri = rate(t.records_in_per_s),
            ro = rate(t.records_out_per_s),
            i = t.records_in,
            o = t.records_out,
            l = t.lag,
            bp = t.backpressure_ms as f64 / 1000.0,
            rs = t.restarts,
            errt = t.last_error.as_ref().map_or(String::new(), |e| esc(&e.message)),
            err = t.last_error.as_ref().map_or(String::new(), |e| format!(
                "{} <span class=\"when\">({} UTC)</span>",
                esc(&e.message),
                clock(e.at_ms)
            )),
        );
    }
    if w.tasks.is_empty() {
        h.push_str("<tr><td colspan=\"13\">no task reported by this worker</td></tr>");
    }
    h.push_str("</tbody></table>");
    h.push_str("<h2>Assigned by the leader</h2><table id=\"assigned\"><thead><tr><th>task</th><th>job</th><th>state</th><th>epoch</th></tr></thead><tbody>");
    for a in &w.assigned {
        let _ = write!(
            h,
            "<tr><td>{}</td><td><a href=\"/jobs/{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            esc(&a.task),
            seg(&a.job),
            esc(&a.job),
            state_badge(&a.state),
            a.epoch
        );
    }
    if w.assigned.is_empty() {
        h.push_str("<tr><td colspan=\"4\">none</td></tr>");
    }
    h.push_str("</tbody></table>");
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::web::cluster::{JobSummary, WorkerSummary};

    #[test]
    fn escapes_and_admin_buttons() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(clock(3_723_000), "01:02:03");
        assert_eq!(rate(-0.0), "0.0");
        assert_eq!(rate(123.4), "123");
        let summary = JobSummary {
            name: "pay".into(),
            job_type: "etl".into(),
            parallelism: 2,
            state: "RUNNING".into(),
            epoch: 1,
            tasks: 2,
            running: 2,
            records_in: 10,
            records_out: 10,
            lag: 0,
            records_in_per_s: 12.5,
            records_out_per_s: 12.5,
            restarts: 0,
            error: None,
        };
        let mut j = JobDetail {
            served_by: "w1".into(),
            admin: false,
            summary: summary.clone(),
            config: Default::default(),
            job_stages: Vec::new(),
            tasks: Vec::new(),
            stages: Vec::new(),
            errors: Vec::new(),
            history: vec![
                Point {
                    at_ms: 1000,
                    records_in_per_s: 1.0,
                    records_out_per_s: 1.0,
                    lag: 3,
                },
                Point {
                    at_ms: 3000,
                    records_in_per_s: 2.0,
                    records_out_per_s: 1.0,
                    lag: 1,
                },
            ],
            at_ms: 5000,
        };
        let ro = job_live(&j);
        assert!(!ro.contains("data-action"), "{ro}");
        assert!(ro.contains("<polyline class=\"in\""), "{ro}");
        j.admin = true;
        assert!(job_live(&j).contains("data-action=\"cancel\""));
        let c = ClusterView {
            served_by: "w1".into(),
            admin: false,
            leader: Some("w1".into()),
            workers: vec![WorkerSummary {
                id: "w1".into(),
                address: "127.0.0.1:1".into(),
                capacity: 4,
                assigned: 2,
                running: 2,
                job_types: vec![],
                version: "0".into(),
                reachable: true,
                unreachable_reason: None,
                leader: true,
                session: "connected".into(),
                records_in_per_s: 0.0,
                records_out_per_s: 0.0,
            }],
            gone: vec![],
            jobs: vec![JobSummary {
                name: "<x>".into(),
                ..summary
            }],
            at_ms: 0,
        };
        let o = overview_live(&c);
        assert!(o.contains("href=\"/jobs/%3Cx%3E\">&lt;x&gt;</a>"), "{o}");
        assert!(o.contains("data-worker=\"w1\""));
        let p = page("t", false, &o);
        assert!(p.contains("read-only") && p.contains("/assets/app.js"));
    }
}
