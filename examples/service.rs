//! service: the weir worker binary with the `etl` and `clicks` job types.
//!
//! ```text
//! cargo run --release --example service -- worker --zk 127.0.0.1:2181 \
//!     --brokers 127.0.0.1:9092 --id w1 [--session-timeout-ms 6000] [--http 127.0.0.1:8081 [--http-admin]]
//! weir submit etl --name payments --parallelism 6 --set input=payments --set output=payments-cents
//! ```
//!
//! `etl` runs as one stage: task `i` of `N` reads the input partitions `p`
//! with `p % N == i` in the job's consumer group (`weir-job-<name>`, or
//! `--set group=...`), so a task moved to another worker resumes from the
//! offsets committed at its last checkpoint. `clicks` runs as two stages
//! (split at its `key_by(user)`): `parse` tasks read the input partitions
//! as above and write each click to `weir-<name>-count-repartition` by its
//! user's stable hash; `count` tasks read their partitions of that topic
//! and count each user's clicks per 10 s window, so the result does not
//! depend on how the input is partitioned (`weir submit clicks
//! --parallelism 4 [--stage-parallelism count=2]`). `clicks-totals` adds a
//! third stage: `count` writes its per-user counts to
//! `weir-<name>-total-repartition` by window, and `total` writes one
//! `{"window_start", "clicks"}` per window over all users. Job parameters:
//! `input`, `output` (every type), `group` (optional),
//! `repartition_partitions` (staged types, optional: repartition topics are
//! made with this many partitions when it exceeds their downstream stage's
//! parallelism, so that stage can be rescaled up to it). With
//! `--checkpoint-url`, a rescaled task takes its partitions over from the
//! tasks that had them, with their checkpoints (keyed state split by the
//! repartition topic's placement), their writers fenced first. SIGTERM drains every task (the sinks
//! flush, offsets are committed), leaves the cluster and exits. Logs go to
//! stderr (`RUST_LOG` filters).
//!
//! For tests only, the hidden flag `--test-job-types` also registers the job
//! type `failing`: an unbounded generator whose tasks panic on every record on
//! the worker named by `--set fail_on=<worker id>` (and run normally on the
//! others), with a short restart policy (2 restarts, 50-200 ms backoff), so a
//! test can drive a task past its policy on one worker and watch it move.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use weir::actors::RestartPolicy;
use weir::apps::clicks_stages::{clicks_stage, StageParams};
use weir::apps::etl::{etl_job, EtlParams};
use weir::apps::window_totals::{totals_stage, TotalsParams};
use weir::connectors::kafka::repartition::ensure_repartition_topic;
use weir::connectors::kafka::KafkaConfig;
use weir::connectors::{BlackholeSink, GeneratorSource};
use weir::pipeline::Job;
use weir::service::kafka::{partition_count, KafkaLagProbe};
use weir::service::registry::{partitions_of_task, TaskFactory};
use weir::service::{run_worker, JobTypeRegistry, TaskBuild, TaskEnv, WorkerConfig};

#[derive(Parser, Debug)]
#[command(
    name = "service",
    version,
    about = "weir worker with the etl and clicks job types"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a worker until SIGTERM.
    Worker {
        /// ZooKeeper HOST:PORT, or an ensemble HOST:PORT,HOST:PORT,... (optional /CHROOT suffix).
        #[arg(long)]
        zk: String,
        /// Kafka bootstrap servers.
        #[arg(long)]
        brokers: String,
        /// ZooKeeper digest credentials USER:PASSWORD (or env WEIR_ZK_AUTH).
        #[arg(long, env = "WEIR_ZK_AUTH", hide_env_values = true)]
        zk_auth: Option<String>,
        /// A file whose first line is USER:PASSWORD (instead of --zk-auth).
        #[arg(long, env = "WEIR_ZK_AUTH_FILE")]
        zk_auth_file: Option<std::path::PathBuf>,
        /// Worker id (unique in the cluster).
        #[arg(long)]
        id: String,
        /// ZooKeeper session timeout.
        #[arg(long, default_value_t = 6000)]
        session_timeout_ms: u64,
        /// Serve the cluster dashboard, its JSON API (/api/cluster, /api/jobs/NAME,
        /// /api/workers/ID, /api/tasks), /metrics and /healthz here.
        #[arg(long)]
        http: Option<SocketAddr>,
        /// Let the dashboard and its API cancel and rescale jobs (read-only without it).
        #[arg(long, requires = "http")]
        http_admin: bool,
        /// Root znode of the cluster.
        #[arg(long, default_value = "/weir")]
        root: String,
        /// Most tasks on this worker.
        #[arg(long, default_value_t = 64)]
        capacity: u32,
        /// Threads running the tasks' actors.
        #[arg(long, default_value_t = 2)]
        threads: usize,
        /// Also register the test-only job type `failing` (see the module docs).
        #[arg(long, hide = true)]
        test_job_types: bool,
        /// Durable checkpoint storage shared by every worker (file:///dir on
        /// one machine or a shared mount; s3:// with the `s3` feature): the
        /// etl and clicks tasks then run exactly-once and restore from it
        /// on whichever worker they move to.
        #[arg(long, value_name = "URL")]
        checkpoint_url: Option<String>,
    },
}

/// The input partitions of this task, or why it has none.
fn my_partitions(env: &TaskEnv, input: &str) -> Result<Vec<i32>, String> {
    let total = partition_count(&env.brokers, input, Duration::from_secs(10))?;
    let mine = partitions_of_task(total, env.index, env.count);
    if mine.is_empty() {
        return Err(format!(
            "input topic {input:?} has {total} partitions: task {} of {} has none to read (parallelism above the partition count)",
            env.index, env.count
        ));
    }
    Ok(mine)
}

fn probe(
    env: &TaskEnv,
    input: &str,
    parts: &[i32],
) -> Option<Arc<dyn weir::service::ProgressProbe>> {
    KafkaLagProbe::new(&env.brokers, &env.group(), input, parts.to_vec())
        .map(|p| Arc::new(p) as Arc<dyn weir::service::ProgressProbe>)
        .ok()
}

/// A task's own job name (its checkpoints and transactional id): the same
/// on whichever worker it runs, distinct from its sibling tasks (and from
/// the other stages' tasks): `<task name prefix><index>-of-<count>`.
fn task_job_name(env: &TaskEnv) -> String {
    format!("{}{}-of-{}", task_name_prefix(env), env.index, env.count)
}

/// What the names of a stage's tasks start with, whatever its
/// parallelism: a rescaled task takes partitions over from the tasks so
/// named (`<job>-task-`, or `<job>-<stage>-task-` for a staged job).
fn task_name_prefix(env: &TaskEnv) -> String {
    if env.stage.is_empty() {
        format!("{}-task-", env.spec.name)
    } else {
        format!("{}-{}-task-", env.spec.name, env.stage)
    }
}

fn etl(env: &TaskEnv) -> Result<TaskBuild, String> {
    let input = env.param("input")?.to_string();
    let output = env.param("output")?.to_string();
    let parts = my_partitions(env, &input)?;
    let mut p = EtlParams::new(&env.brokers, &input, &output);
    p.group = env.group();
    p.parallelism = 1;
    p.partitions = Some(parts.clone());
    p.fence = Some(env.guard.clone());
    if let Some(url) = &env.checkpoint_url {
        p.checkpoint_url = Some(url.clone());
        p.job_name = task_job_name(env);
        p.take_over_from = Some(task_name_prefix(env));
    }
    Ok(TaskBuild {
        job: etl_job(&p).into(),
        probe: probe(env, &input, &parts),
    })
}

/// Partitions of a repartition topic made for a stage of `parallelism`
/// tasks: the job parameter `repartition_partitions` when it is larger
/// (room to rescale that stage up to it, its keyed state moving with its
/// partitions), else `parallelism`. An existing topic keeps its count.
fn repartition_partitions(env: &TaskEnv, parallelism: usize) -> Result<usize, String> {
    match env.spec.config.get("repartition_partitions") {
        None => Ok(parallelism),
        Some(v) => v.parse::<usize>().map(|n| n.max(parallelism)).map_err(|_| {
            format!("job parameter repartition_partitions={v:?}: want a number of partitions")
        }),
    }
}

/// What both stages of `clicks` share: topics, stage sizes, this task's
/// place, its lease, checkpoints; the repartition topic made if missing
/// (with the count stage's parallelism as its partition count).
fn stage_params(env: &TaskEnv) -> Result<StageParams, String> {
    let input = env.param("input")?.to_string();
    let output = env.param("output")?.to_string();
    let mut p = StageParams::new(&env.brokers, &input, &output);
    p.job = env.spec.name.clone();
    p.instance = env.index as usize;
    p.parse_instances = env.stage_count("parse") as usize;
    p.count_instances = env.stage_count("count") as usize;
    p.fence = Some(env.guard.clone());
    p.copy_name = Some(task_job_name(env));
    p.take_over_from = Some(task_name_prefix(env));
    p.late_topic = Some(format!("{input}.dlq"));
    p.checkpoint_url = env.checkpoint_url.clone();
    let config = KafkaConfig::new(&env.brokers);
    let partitions = repartition_partitions(env, p.count_instances)?;
    p.repartition_partitions = ensure_repartition_topic(&config, &p.topic(), partitions)
        .map_err(|e| format!("repartition topic {}: {e}", p.topic()))?;
    Ok(p)
}

/// Where a task's input progress comes from: for the source stage
/// (`parse`), its input partitions in the job's group (the input's
/// partition count read into `p`); for a stage after a repartition topic,
/// its partitions of that topic in the group `<group>-<stage>` (the
/// planner's), `partitions` of them in all.
fn stage_probe(
    env: &TaskEnv,
    p: &mut StageParams,
    topic: &str,
    partitions: usize,
) -> Result<Option<Arc<dyn weir::service::ProgressProbe>>, String> {
    if env.stage == "parse" {
        let parts = my_partitions(env, &p.input)?;
        p.input_partitions =
            partition_count(&env.brokers, &p.input, Duration::from_secs(10))? as usize;
        return Ok(probe(env, &p.input, &parts));
    }
    let parts = partitions_of_task(partitions as u32, env.index, env.count);
    let group = format!("{}-{}", env.group(), env.stage);
    Ok(KafkaLagProbe::new(&env.brokers, &group, topic, parts)
        .map(|p| Arc::new(p) as Arc<dyn weir::service::ProgressProbe>)
        .ok())
}

/// A task of `clicks`: its stage (`parse` or `count`) cut from the job's
/// graph by the stage planner.
fn clicks_task(env: &TaskEnv) -> Result<TaskBuild, String> {
    let mut p = stage_params(env)?;
    p.group = Some(env.group());
    let (topic, partitions) = (p.topic(), p.repartition_partitions);
    let probe = stage_probe(env, &mut p, &topic, partitions)?;
    let job = clicks_stage(&p, &env.stage).map_err(|e| e.to_string())?;
    Ok(TaskBuild { job, probe })
}

/// The three-stage `clicks-totals`' params: the two-stage ones plus the
/// `total` stage's size and its repartition topic (made if missing).
fn totals_params(env: &TaskEnv) -> Result<TotalsParams, String> {
    let stage = stage_params(env)?;
    let mut p = TotalsParams {
        stage,
        total_instances: env.stage_count("total") as usize,
        total_partitions: 0,
    };
    let config = KafkaConfig::new(&env.brokers);
    let partitions = repartition_partitions(env, p.total_instances)?;
    p.total_partitions = ensure_repartition_topic(&config, &p.totals_topic(), partitions)
        .map_err(|e| format!("repartition topic {}: {e}", p.totals_topic()))?;
    Ok(p)
}

/// A task of `clicks-totals`: its stage (`parse`, `count` or `total`) cut
/// from the three-stage graph.
fn totals_task(env: &TaskEnv) -> Result<TaskBuild, String> {
    let mut p = totals_params(env)?;
    p.stage.group = Some(env.group());
    let (topic, partitions) = match env.stage.as_str() {
        "total" => (p.totals_topic(), p.total_partitions),
        _ => (p.stage.topic(), p.stage.repartition_partitions),
    };
    let probe = stage_probe(env, &mut p.stage, &topic, partitions)?;
    let job = totals_stage(&p, &env.stage).map_err(|e| e.to_string())?;
    Ok(TaskBuild { job, probe })
}

/// Test-only (`--test-job-types`): a generator of numbers at 200 records/s into a blackhole,
/// whose map panics on every record when this worker is the job's `fail_on` parameter (`*`:
/// on every worker).
fn failing(env: &TaskEnv, worker: &str) -> Result<TaskBuild, String> {
    let fail_on = env.spec.config.get("fail_on").map(String::as_str);
    let fail = fail_on == Some(worker) || fail_on == Some("*");
    let name = format!("{}-{}", env.spec.name, env.index);
    let who = worker.to_string();
    let job = Job::new(name)
        .restart_policy(
            RestartPolicy::new(2, Duration::from_secs(60))
                .with_backoff(Duration::from_millis(50), Duration::from_millis(200)),
        )
        .source(GeneratorSource::new(|i: u64| i).rate(200.0))
        .map(move |i: u64| {
            if fail {
                panic!("failing job: record {i} refused on worker {who} (fail_on)");
            }
            i
        })
        .sink(BlackholeSink::new());
    Ok(TaskBuild::from(job))
}

fn main() -> anyhow::Result<()> {
    weir::logging::init_stderr();
    let Cmd::Worker {
        zk,
        zk_auth,
        zk_auth_file,
        brokers,
        id,
        session_timeout_ms,
        http,
        http_admin,
        root,
        capacity,
        threads,
        test_job_types,
        checkpoint_url,
    } = Args::parse().cmd;
    let mut registry = JobTypeRegistry::new();
    registry.register("etl", etl).register_stages(
        "clicks",
        vec![
            ("parse".into(), Arc::new(clicks_task) as TaskFactory),
            ("count".into(), Arc::new(clicks_task) as TaskFactory),
        ],
    );
    registry.register_stages(
        "clicks-totals",
        vec![
            ("parse".into(), Arc::new(totals_task) as TaskFactory),
            ("count".into(), Arc::new(totals_task) as TaskFactory),
            ("total".into(), Arc::new(totals_task) as TaskFactory),
        ],
    );
    if test_job_types {
        let me = id.clone();
        registry.register("failing", move |env| failing(env, &me));
    }
    let mut cfg = WorkerConfig::new(&id, &zk, &brokers);
    cfg.root = root;
    cfg.zk_auth = weir::coord::session::ZkAuth::from_flag_or_file(
        zk_auth.as_deref(),
        zk_auth_file.as_deref(),
    )?;
    cfg.session_timeout = Duration::from_millis(session_timeout_ms);
    cfg.capacity = capacity;
    cfg.threads = threads;
    cfg.checkpoint_url = checkpoint_url;
    cfg.http_admin = http_admin;
    let system = actix::System::new();
    system
        .block_on(run_worker(cfg, registry, http))
        .context("worker failed")?;
    tracing::info!(worker = %id, "worker exited");
    Ok(())
}
