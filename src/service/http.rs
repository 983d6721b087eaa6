//! The worker's HTTP endpoint: a deliberately tiny HTTP/1.1 server.
//!
//! Owns: [`serve`] (a tokio `TcpListener`, one request per connection,
//! `Connection: close`) and the four pages: `/metrics` (Prometheus text:
//! per-task records in/out, lag, batches, backpressure time, restarts, state;
//! session state and lease), `/healthz`, `/api/tasks` (JSON [`WorkerView`])
//! and `/` (an HTML dashboard listing tasks and states).
//! Must never: block the worker (it only reads the [`SharedView`] copy),
//! trust the request (bounded read, unknown paths get 404), or pull in a web
//! framework.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::error::{ServiceError, ServiceResult};
use super::view::{SharedView, WorkerView};
use crate::coord::TaskStatus;

/// Binds `addr` and serves the worker's pages until the returned task is aborted.
pub async fn serve(
    addr: SocketAddr,
    view: SharedView,
) -> ServiceResult<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| ServiceError::Io {
            context: format!("cannot listen for HTTP on {addr}"),
            source: e,
        })?;
    let bound = listener.local_addr().map_err(|e| ServiceError::Io {
        context: "HTTP listener address".into(),
        source: e,
    })?;
    let handle = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let v = view.clone();
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(5), handle_conn(stream, v))
                                .await;
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok((bound, handle))
}

async fn handle_conn(mut stream: TcpStream, view: SharedView) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let (status, ctype, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        )
    } else {
        route(path, &view.get())
    };
    let mut resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        resp.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&resp).await?;
    stream.shutdown().await
}

/// The response (status line, content type, body) for `path`.
pub fn route(path: &str, v: &WorkerView) -> (&'static str, &'static str, String) {
    match path {
        "/metrics" => ("200 OK", "text/plain; version=0.0.4", metrics(v)),
        "/healthz" => {
            if v.connected {
                ("200 OK", "text/plain", format!("ok: {}\n", v.session))
            } else {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("not connected: {}\n", v.session),
                )
            }
        }
        "/api/tasks" => (
            "200 OK",
            "application/json",
            serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}")),
        ),
        "/" | "/index.html" => ("200 OK", "text/html; charset=utf-8", dashboard(v)),
        _ => (
            "404 Not Found",
            "text/plain",
            format!("no page {path}; try /, /metrics, /healthz, /api/tasks\n"),
        ),
    }
}

fn esc_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn status_name(s: TaskStatus) -> &'static str {
    match s {
        TaskStatus::Scheduled => "SCHEDULED",
        TaskStatus::Running => "RUNNING",
        TaskStatus::Restarting => "RESTARTING",
        TaskStatus::Failed => "FAILED",
        TaskStatus::Finished => "FINISHED",
        TaskStatus::Cancelled => "CANCELLED",
    }
}

/// Prometheus text exposition of the view.
pub fn metrics(v: &WorkerView) -> String {
    let mut out = String::new();
    let w = esc_label(&v.worker);
    let _ = writeln!(
        out,
        "# HELP weir_session_connected 1 when the ZooKeeper session is connected."
    );
    let _ = writeln!(out, "# TYPE weir_session_connected gauge");
    let _ = writeln!(
        out,
        "weir_session_connected{{worker=\"{w}\"}} {}",
        u8::from(v.connected)
    );
    let _ = writeln!(
        out,
        "# HELP weir_leader 1 when this worker leads the cluster."
    );
    let _ = writeln!(out, "# TYPE weir_leader gauge");
    let _ = writeln!(out, "weir_leader{{worker=\"{w}\"}} {}", u8::from(v.leader));
    let _ = writeln!(out, "# HELP weir_lease_remaining_seconds Time left on the write lease (0: sinks refuse writes).");
    let _ = writeln!(out, "# TYPE weir_lease_remaining_seconds gauge");
    let _ = writeln!(
        out,
        "weir_lease_remaining_seconds{{worker=\"{w}\"}} {:.3}",
        v.lease_ms as f64 / 1000.0
    );
    let _ = writeln!(out, "# HELP weir_tasks Tasks on this worker.");
    let _ = writeln!(out, "# TYPE weir_tasks gauge");
    let _ = writeln!(out, "weir_tasks{{worker=\"{w}\"}} {}", v.tasks.len());
    type Get = fn(&super::view::TaskView) -> f64;
    let series: [(&str, &str, &str, Get); 11] = [
        (
            "weir_task_records_in_total",
            "counter",
            "Records read by the task.",
            |t| t.records_in as f64,
        ),
        (
            "weir_task_records_out_total",
            "counter",
            "Records written by the task.",
            |t| t.records_out as f64,
        ),
        (
            "weir_task_batches_total",
            "counter",
            "Batches read by the task's source.",
            |t| t.batches as f64,
        ),
        (
            "weir_task_backpressure_seconds_total",
            "counter",
            "Time the task's actors waited on full mailboxes.",
            |t| t.backpressure_ms as f64 / 1000.0,
        ),
        (
            "weir_task_lag_records",
            "gauge",
            "Records behind the end of the task's input partitions.",
            |t| t.lag as f64,
        ),
        (
            "weir_task_restarts_total",
            "counter",
            "Restarts of the task by its supervisor.",
            |t| t.restarts as f64,
        ),
        (
            "weir_task_checkpoint_id",
            "gauge",
            "Id of the task's latest completed checkpoint (0: none).",
            |t| t.checkpoint.as_ref().map_or(0.0, |c| c.id as f64),
        ),
        (
            "weir_task_checkpoint_age_seconds",
            "gauge",
            "Time since the task's latest checkpoint completed (0: none).",
            |t| {
                t.checkpoint.as_ref().map_or(0.0, |c| {
                    crate::coord::model::now_ms().saturating_sub(c.completed_at_ms) as f64 / 1000.0
                })
            },
        ),
        (
            "weir_task_checkpoint_duration_seconds",
            "gauge",
            "From barriers to commit, of the task's latest checkpoint.",
            |t| {
                t.checkpoint
                    .as_ref()
                    .map_or(0.0, |c| c.duration_ms as f64 / 1000.0)
            },
        ),
        (
            "weir_task_checkpoint_state_bytes",
            "gauge",
            "Operator state held by the task's latest checkpoint.",
            |t| t.checkpoint.as_ref().map_or(0.0, |c| c.state_bytes as f64),
        ),
        (
            "weir_task_checkpoint_failures_total",
            "counter",
            "Checkpoints of the task that could not be stored or committed.",
            |t| t.checkpoint_failures as f64,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for t in &v.tasks {
            let _ = writeln!(
                out,
                "{name}{{worker=\"{w}\",job=\"{}\",task=\"{}\"}} {}",
                esc_label(&t.job),
                esc_label(&t.task),
                get(t)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP weir_task_state 1 for the task's current state."
    );
    let _ = writeln!(out, "# TYPE weir_task_state gauge");
    for t in &v.tasks {
        let _ = writeln!(
            out,
            "weir_task_state{{worker=\"{w}\",job=\"{}\",task=\"{}\",state=\"{}\"}} 1",
            esc_label(&t.job),
            esc_label(&t.task),
            status_name(t.state)
        );
    }
    out
}

fn esc_html(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The dashboard page.
pub fn dashboard(v: &WorkerView) -> String {
    let mut rows = String::new();
    for t in &v.tasks {
        let _ = write!(
            rows,
            "<tr class=\"{st}\"><td>{}</td><td>{}</td><td>{}</td><td>{st}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc_html(&t.task),
            esc_html(&t.job),
            esc_html(&t.job_type),
            t.epoch,
            t.records_in,
            t.records_out,
            t.lag,
            t.restarts,
            esc_html(t.last_error.as_ref().map(|e| e.message.as_str()).unwrap_or("")),
            st = status_name(t.state),
        );
    }
    if v.tasks.is_empty() {
        rows.push_str("<tr><td colspan=\"10\">no task on this worker</td></tr>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
<title>weir worker {w}</title><style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}.RUNNING td:nth-child(4){{color:green}}\
.FAILED td:nth-child(4),.RESTARTING td:nth-child(4){{color:#b00}}</style></head><body>\
<h1>weir worker {w}</h1><p>ZooKeeper: {s}{l}<br>write lease: {lease} ms &middot; job types: {types}</p>\
<table><tr><th>task</th><th>job</th><th>type</th><th>state</th><th>epoch</th><th>records in</th><th>records out</th>\
<th>lag</th><th>restarts</th><th>last error</th></tr>{rows}</table>\
<p><a href=\"/metrics\">/metrics</a> &middot; <a href=\"/api/tasks\">/api/tasks</a> &middot; <a href=\"/healthz\">/healthz</a></p></body></html>\n",
        w = esc_html(&v.worker),
        s = esc_html(&v.session),
        l = if v.leader { " (leader)" } else { "" },
        lease = v.lease_ms,
        types = esc_html(&v.job_types.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::view::TaskView;

    fn sample() -> WorkerView {
        WorkerView {
            worker: "w1".into(),
            session: "connected".into(),
            connected: true,
            leader: true,
            lease_ms: 1500,
            job_types: vec!["etl".into()],
            tasks: vec![TaskView {
                task: "j-0".into(),
                job: "j".into(),
                job_type: "etl".into(),
                state: TaskStatus::Running,
                epoch: 3,
                records_in: 10,
                records_out: 9,
                batches: 2,
                backpressure_ms: 1500,
                lag: 4,
                offsets: Default::default(),
                restarts: 1,
                last_error: None,
                checkpoint: Some(crate::actors::CheckpointSummary {
                    id: 7,
                    completed_at_ms: 1,
                    duration_ms: 250,
                    state_bytes: 4096,
                }),
                checkpoint_failures: 1,
            }],
        }
    }

    #[test]
    fn pages() {
        let v = sample();
        let m = metrics(&v);
        assert!(
            m.contains("weir_task_records_in_total{worker=\"w1\",job=\"j\",task=\"j-0\"} 10"),
            "{m}"
        );
        assert!(
            m.contains(
                "weir_task_backpressure_seconds_total{worker=\"w1\",job=\"j\",task=\"j-0\"} 1.5"
            ),
            "{m}"
        );
        for line in [
            "weir_task_checkpoint_id{worker=\"w1\",job=\"j\",task=\"j-0\"} 7",
            "weir_task_checkpoint_duration_seconds{worker=\"w1\",job=\"j\",task=\"j-0\"} 0.25",
            "weir_task_checkpoint_state_bytes{worker=\"w1\",job=\"j\",task=\"j-0\"} 4096",
            "weir_task_checkpoint_failures_total{worker=\"w1\",job=\"j\",task=\"j-0\"} 1",
        ] {
            assert!(m.contains(line), "{line} in\n{m}");
        }
        assert!(m.contains("weir_task_checkpoint_age_seconds{"));
        assert!(m.contains("weir_session_connected{worker=\"w1\"} 1"));
        assert!(m.contains("state=\"RUNNING\"} 1"));
        assert_eq!(route("/healthz", &v).0, "200 OK");
        assert_eq!(route("/nope", &v).0, "404 Not Found");
        let api: WorkerView = serde_json::from_str(&route("/api/tasks", &v).2).unwrap();
        assert_eq!(api, v);
        assert!(dashboard(&v).contains("<td>j-0</td>"));
    }
}
