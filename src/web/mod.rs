//! The worker's HTTP endpoint and the cluster dashboard, on axum.
//!
//! Owns: [`serve`] (binds and runs the [`router`] on the worker's runtime)
//! and the routes: `/metrics` ([`metrics`]: prometheus-client, OpenMetrics
//! text), `/healthz`, `/api/tasks` (this worker's [`WorkerView`];
//! `?history=true` adds each task's samples of the last 5 minutes),
//! `/api/cluster`, `/api/jobs/{name}`, `/api/workers/{id}` ([`cluster`]: read
//! from ZooKeeper and from the other workers' `/api/tasks`), the pages `/`,
//! `/jobs/{name}`, `/workers/{id}` ([`pages`]; `?part=live` gives the part
//! the page polls) with their compiled-in assets, and the admin actions
//! `POST /api/jobs/{name}/cancel` and `POST /api/jobs/{name}/rescale`
//! (`{"parallelism": N}`), which answer 403 unless the worker runs with
//! `--http-admin`.
//! Must never: change the cluster without `--http-admin` (no other route
//! writes to ZooKeeper, and the admin routes want a JSON content type, which a
//! cross-site form cannot send), block the worker (pages read the
//! [`SharedView`] copy; ZooKeeper and peer reads are async and bounded), or
//! load anything from the internet (no CDN: assets are in the binary).

pub(crate) mod client;
pub mod cluster;
pub mod metrics;
pub mod pages;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use thiserror::Error;
use tokio::task::JoinHandle;

use crate::service::{ServiceError, ServiceResult, SharedView, WorkerView};
use cluster::ClusterReader;

/// How the endpoint runs.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// Where to listen (`127.0.0.1:0`: any free port).
    pub addr: SocketAddr,
    /// Whether cancel and rescale are allowed (`--http-admin`).
    pub admin: bool,
    /// ZooKeeper `host:port` the cluster view is read from.
    pub zk: String,
    /// The cluster's root znode.
    pub root: String,
}

/// What a route can fail with (each maps to an HTTP status).
#[derive(Debug, Error)]
pub enum WebError {
    /// No such job, worker or page.
    #[error("{0}")]
    NotFound(String),
    /// A mutating request on a read-only endpoint.
    #[error("read-only: this worker's HTTP endpoint does not change the cluster (start it with --http-admin to allow cancel and rescale)")]
    ReadOnly,
    /// A malformed request.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// ZooKeeper or the service layer failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl WebError {
    fn status(&self) -> StatusCode {
        match self {
            WebError::NotFound(_) | WebError::Service(ServiceError::NoSuchJob(_)) => {
                StatusCode::NOT_FOUND
            }
            WebError::ReadOnly => StatusCode::FORBIDDEN,
            WebError::BadRequest(_) | WebError::Service(ServiceError::Invalid { .. }) => {
                StatusCode::BAD_REQUEST
            }
            WebError::Service(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

/// The state every route shares.
#[derive(Clone)]
pub(crate) struct App {
    view: SharedView,
    admin: bool,
    cluster: Arc<ClusterReader>,
    registry: Arc<Registry>,
}

/// Binds `cfg.addr` and serves until the returned task is aborted.
pub async fn serve(
    cfg: WebConfig,
    view: SharedView,
) -> ServiceResult<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(cfg.addr)
        .await
        .map_err(|e| ServiceError::Io {
            context: format!("cannot listen for HTTP on {}", cfg.addr),
            source: e,
        })?;
    let bound = listener.local_addr().map_err(|e| ServiceError::Io {
        context: "HTTP listener address".into(),
        source: e,
    })?;
    let app = router(&cfg, view)?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "HTTP endpoint stopped");
        }
    });
    Ok((bound, handle))
}

/// The routes (see the module docs) over `view`.
pub fn router(cfg: &WebConfig, view: SharedView) -> ServiceResult<Router> {
    let app = App {
        registry: Arc::new(metrics::registry(view.clone())),
        cluster: Arc::new(ClusterReader::new(&cfg.zk, &cfg.root)?),
        view,
        admin: cfg.admin,
    };
    Ok(Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/api/tasks", get(api_tasks))
        .route("/api/cluster", get(api_cluster))
        .route("/api/jobs/{name}", get(api_job))
        .route("/api/jobs/{name}/cancel", post(cancel))
        .route("/api/jobs/{name}/rescale", post(rescale))
        .route("/api/workers/{id}", get(api_worker))
        .route("/", get(overview_page))
        .route("/index.html", get(overview_page))
        .route("/jobs/{name}", get(job_page))
        .route("/workers/{id}", get(worker_page))
        .route("/assets/app.js", get(app_js))
        .route("/assets/style.css", get(style_css))
        .fallback(not_found)
        .with_state(app))
}

async fn metrics_page(State(app): State<App>) -> Response {
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, &app.registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}\n"),
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn healthz(State(app): State<App>) -> Response {
    let v = app.view.get();
    if v.connected {
        (StatusCode::OK, format!("ok: {}\n", v.session)).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not connected: {}\n", v.session),
        )
            .into_response()
    }
}

#[derive(Debug, Deserialize)]
struct TasksQuery {
    history: Option<String>,
}

async fn api_tasks(State(app): State<App>, Query(q): Query<TasksQuery>) -> Json<WorkerView> {
    let history = q
        .history
        .is_some_and(|h| !matches!(h.as_str(), "false" | "0" | "no"));
    Json(if history {
        app.view.get_with_history()
    } else {
        app.view.get()
    })
}

async fn api_cluster(State(app): State<App>) -> Result<Json<cluster::ClusterView>, WebError> {
    Ok(Json(app.cluster.cluster(&app.view, app.admin).await?))
}

async fn api_job(
    State(app): State<App>,
    Path(name): Path<String>,
) -> Result<Json<cluster::JobDetail>, WebError> {
    Ok(Json(app.cluster.job(&app.view, app.admin, &name).await?))
}

async fn api_worker(
    State(app): State<App>,
    Path(id): Path<String>,
) -> Result<Json<cluster::WorkerDetail>, WebError> {
    Ok(Json(app.cluster.worker(&app.view, app.admin, &id).await?))
}

/// Refuses unless `--http-admin`, and unless the request says it is JSON (a
/// cross-site form cannot).
fn admin_only(app: &App, headers: &HeaderMap) -> Result<(), WebError> {
    if !app.admin {
        return Err(WebError::ReadOnly);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json {
        return Err(WebError::BadRequest(
            "send Content-Type: application/json".into(),
        ));
    }
    Ok(())
}

async fn cancel(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, WebError> {
    admin_only(&app, &headers)?;
    let removed = app.cluster.cancel(&name, Duration::from_secs(10)).await?;
    tracing::info!(job = %name, removed, "job cancelled from the dashboard");
    Ok(Json(
        serde_json::json!({ "cancelled": name, "removed": removed }),
    ))
}

#[derive(Debug, Deserialize)]
struct RescaleRequest {
    parallelism: u32,
}

async fn rescale(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, WebError> {
    admin_only(&app, &headers)?;
    let req: RescaleRequest =
        serde_json::from_slice(&body).map_err(|e| WebError::BadRequest(e.to_string()))?;
    let old = app.cluster.rescale(&name, req.parallelism).await?;
    tracing::info!(job = %name, from = old, to = req.parallelism, "job rescaled from the dashboard");
    Ok(Json(
        serde_json::json!({ "job": name, "from": old, "to": req.parallelism }),
    ))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    part: Option<String>,
}

impl PageQuery {
    fn live_only(&self) -> bool {
        self.part.as_deref() == Some("live")
    }
}

/// A page, or only its live part; an error keeps the page (and its polling) alive.
fn page_response(
    q: &PageQuery,
    admin: bool,
    title: &str,
    live: Result<String, WebError>,
) -> Response {
    let (status, live) = match live {
        Ok(html) => (StatusCode::OK, html),
        Err(e) => (e.status(), pages::error_live(&e.to_string())),
    };
    let html = if q.live_only() {
        live
    } else {
        pages::page(title, admin, &live)
    };
    (status, Html(html)).into_response()
}

async fn overview_page(State(app): State<App>, Query(q): Query<PageQuery>) -> Response {
    let live = app
        .cluster
        .cluster(&app.view, app.admin)
        .await
        .map(|c| pages::overview_live(&c))
        .map_err(WebError::from);
    page_response(&q, app.admin, "weir cluster", live)
}

async fn job_page(
    State(app): State<App>,
    Path(name): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let live = app
        .cluster
        .job(&app.view, app.admin, &name)
        .await
        .map(|j| pages::job_live(&j))
        .map_err(WebError::from);
    page_response(&q, app.admin, &format!("weir job {name}"), live)
}

async fn worker_page(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Response {
    let live = app
        .cluster
        .worker(&app.view, app.admin, &id)
        .await
        .map(|w| pages::worker_live(&w));
    page_response(&q, app.admin, &format!("weir worker {id}"), live)
}

async fn app_js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/app.js"),
    )
        .into_response()
}

async fn style_css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/style.css"),
    )
        .into_response()
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no page {}; try /, /jobs/NAME, /workers/ID, /metrics, /healthz, /api/tasks, /api/cluster\n",
            uri.path()
        ),
    )
        .into_response()
}
