//! Balanced, sticky placement of tasks on workers: a pure function.
//!
//! Owns: [`assign`], which from the tasks, the live workers and the previous
//! placement computes the next placement so that every task runs on a live
//! worker that accepts its job type (and not on the worker it must avoid, see
//! below), loads differ by at most one (a worker full to its capacity may stay
//! below the others), and as few tasks as possible move.
//! Must never: do I/O, read clocks or randomness, or depend on hash order
//! (same input, same output, on every process).
//!
//! # Algorithm
//! 1. *Targets*: water-filling over capacities. `q` is the largest level with
//!    `Σ min(cap_i, q) ≤ n`; the `r` remaining tasks raise `r` workers (those
//!    with `cap_i > q`) to `q + 1`, preferring the workers that already hold
//!    the most of their previous tasks, which maximises what can stay put.
//! 2. *Keep*: each live worker keeps its previous tasks (that still exist and
//!    that it accepts) up to its target.
//! 3. *Fill*: the other tasks (new ones, a dead worker's, overflow), most
//!    constrained first, go to the least-loaded eligible worker below target
//!    (then below capacity), preferring a worker with fewer tasks of the same job.
//! 4. *Repair*: with job-type constraints the targets may be unreachable; a
//!    bounded local search then moves tasks from a worker that is two or more
//!    above another eligible one.
//! 5. *Sticky restore*: a task moved in 3–4 goes back to its previous worker
//!    when that worker is less loaded than its new one.
//!
//! Without job-type constraints steps 1–3 already give loads within one and
//! the fewest possible moves (checked against brute force in the tests).
//!
//! # Avoided workers (failover)
//! A task whose [`TaskRequest::avoid`] names a live worker, while another live
//! worker accepts its job type, is *displaced*: it is not placed on the avoided
//! worker as long as another eligible worker has room. For balance it still
//! counts on the avoided worker (that worker's target shrinks by one, and no
//! other task moves to make up for it), and it is placed on top of the
//! targets: it stays where it is if it can, otherwise it goes to the
//! least-loaded eligible worker with room. So when a task FAILED on `w` and is
//! requested with `avoid = w`, exactly that task moves, the loads counted that
//! way stay balanced, the avoided worker sits below the others by the number
//! of tasks that avoid it, and the result is a fixed point (passing the same
//! requests again moves nothing). If every other eligible worker is full, a
//! displaced task falls back to the avoided worker. An `avoid` naming a
//! worker that is not live, or the only worker that accepts the task, changes
//! nothing.

use std::collections::BTreeMap;

use super::model::{TaskId, WorkerInfo};

/// A task to place, with the job type a worker must accept to run it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// Task id.
    pub id: TaskId,
    /// Required job type (`None`: any worker).
    pub job_type: Option<String>,
    /// A worker not to place it on while another can take it (the worker it last FAILED
    /// on); see the module docs.
    pub avoid: Option<String>,
}

impl TaskRequest {
    /// A task any worker accepting `job_type` may run.
    pub fn new(id: TaskId, job_type: Option<String>) -> Self {
        TaskRequest {
            id,
            job_type,
            avoid: None,
        }
    }
}

/// The result of [`assign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Task -> worker id for every placed task.
    pub tasks: BTreeMap<TaskId, String>,
    /// Tasks no live worker could take (no capacity left, or no worker accepts the job type).
    pub unassigned: Vec<TaskId>,
}

impl Placement {
    /// Number of tasks per worker id (workers with no task are absent).
    pub fn loads(&self) -> BTreeMap<&str, usize> {
        let mut m = BTreeMap::new();
        for w in self.tasks.values() {
            *m.entry(w.as_str()).or_insert(0) += 1;
        }
        m
    }

    /// Tasks whose worker differs from `previous` (including new and orphaned tasks).
    pub fn moved_from<'a>(
        &'a self,
        previous: &'a BTreeMap<TaskId, String>,
    ) -> impl Iterator<Item = &'a TaskId> + 'a {
        self.tasks
            .iter()
            .filter(move |(t, w)| previous.get(*t) != Some(*w))
            .map(|(t, _)| t)
    }
}

struct Slot<'a> {
    info: &'a WorkerInfo,
    target: usize,
    load: usize,
    /// Displaced tasks placed here (on top of the target).
    hosted: usize,
    /// Displaced tasks that avoid this worker (count here for balance).
    phantom: usize,
}

impl Slot<'_> {
    /// The load balance is judged on: own tasks, with displaced ones counted where they avoid.
    fn balance_load(&self) -> usize {
        self.load - self.hosted + self.phantom
    }
    fn has_room(&self) -> bool {
        self.load < self.info.capacity as usize
    }
    /// Room once the tasks that avoid it are counted (they keep their slot reserved, so no
    /// other task is moved in to take it).
    fn has_balance_room(&self) -> bool {
        self.balance_load() < self.info.capacity as usize
    }
}

fn eligible(w: &WorkerInfo, t: &TaskRequest) -> bool {
    match &t.job_type {
        None => true,
        Some(jt) => w.accepts(jt),
    }
}

/// Computes the next placement of `tasks` on the live `workers`, sticking to `previous`.
///
/// ```
/// use std::collections::BTreeMap;
/// use weir::coord::assignment::{assign, TaskRequest};
/// use weir::coord::{TaskId, WorkerInfo};
/// let w = |id: &str| WorkerInfo { id: id.into(), address: String::new(), capacity: 10, job_types: vec![], version: String::new(), stages: Default::default(), brokers: String::new() };
/// let mut tasks: Vec<TaskRequest> = (0..4).map(|i| TaskRequest::new(TaskId::new("j", i), None)).collect();
/// let first = assign(&tasks, &[w("a")], &BTreeMap::new());
/// assert_eq!(first.loads()["a"], 4);
/// // "b" joins: exactly two tasks move to it.
/// let second = assign(&tasks, &[w("a"), w("b")], &first.tasks);
/// assert_eq!(second.moved_from(&first.tasks).count(), 2);
/// // j-0 failed on its worker: it alone moves, to the other one.
/// let failed_on = second.tasks[&TaskId::new("j", 0)].clone();
/// tasks[0].avoid = Some(failed_on.clone());
/// let third = assign(&tasks, &[w("a"), w("b")], &second.tasks);
/// assert_eq!(third.moved_from(&second.tasks).collect::<Vec<_>>(), [&TaskId::new("j", 0)]);
/// assert_ne!(third.tasks[&TaskId::new("j", 0)], failed_on);
/// ```
pub fn assign(
    tasks: &[TaskRequest],
    workers: &[WorkerInfo],
    previous: &BTreeMap<TaskId, String>,
) -> Placement {
    // Deterministic worker order, duplicates (same id) collapsed.
    let mut ws: Vec<&WorkerInfo> = workers.iter().collect();
    ws.sort_by(|a, b| a.id.cmp(&b.id));
    ws.dedup_by(|a, b| a.id == b.id);
    let mut tasks: Vec<&TaskRequest> = tasks.iter().collect();
    tasks.sort_by(|a, b| a.id.cmp(&b.id));
    tasks.dedup_by(|a, b| a.id == b.id);

    let index: BTreeMap<&str, usize> = ws
        .iter()
        .enumerate()
        .map(|(i, w)| (w.id.as_str(), i))
        .collect();

    // Displaced tasks: task -> index of the live worker it avoids, when another can run it.
    let displaced: BTreeMap<&TaskId, usize> = tasks
        .iter()
        .filter_map(|t| {
            let a = *index.get(t.avoid.as_deref()?)?;
            if !eligible(ws[a], t) {
                return None; // it could not run there anyway
            }
            let elsewhere = ws
                .iter()
                .enumerate()
                .any(|(i, w)| i != a && w.capacity > 0 && eligible(w, t));
            elsewhere.then_some((&t.id, a))
        })
        .collect();
    // Eligibility per job type, computed once per type (not once per task and worker).
    let mut by_type: BTreeMap<Option<String>, (Vec<bool>, usize)> = BTreeMap::new();
    for t in &tasks {
        if by_type.contains_key(&t.job_type) {
            continue;
        }
        by_type.entry(t.job_type.clone()).or_insert_with(|| {
            let v: Vec<bool> = ws.iter().map(|w| eligible(w, t)).collect();
            let n = v.iter().filter(|&&e| e).count();
            (v, n)
        });
    }
    let elig = |t: &TaskRequest| -> &[bool] { &by_type[&t.job_type].0 };
    let allowed =
        |i: usize, t: &TaskRequest| -> bool { elig(t)[i] && displaced.get(&t.id) != Some(&i) };
    let mut phantom = vec![0usize; ws.len()];
    for &a in displaced.values() {
        phantom[a] += 1;
    }

    // Previous (non-displaced) tasks each live worker could keep.
    let mut keepable: Vec<Vec<&TaskRequest>> = vec![Vec::new(); ws.len()];
    for t in &tasks {
        if displaced.contains_key(&t.id) {
            continue;
        }
        if let Some(&i) = previous.get(&t.id).and_then(|w| index.get(w.as_str())) {
            if eligible(ws[i], t) {
                keepable[i].push(t);
            }
        }
    }

    // 1. Targets by water-filling (a displaced task counts on the worker it avoids).
    let n = tasks.len();
    let caps: Vec<usize> = ws.iter().map(|w| w.capacity as usize).collect();
    let total_cap: usize = caps.iter().sum();
    let mut targets = vec![0usize; ws.len()];
    if total_cap <= n {
        targets.clone_from(&caps);
    } else {
        let fill = |q: usize| caps.iter().map(|&c| c.min(q)).sum::<usize>();
        let (mut lo, mut hi) = (0usize, caps.iter().copied().max().unwrap_or(0));
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fill(mid) <= n {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let q = lo;
        for (t, &c) in targets.iter_mut().zip(&caps) {
            *t = c.min(q);
        }
        let mut r = n - fill(q);
        let mut extra: Vec<usize> = (0..ws.len()).filter(|&i| caps[i] > q).collect();
        extra.sort_by_key(|&i| (std::cmp::Reverse(keepable[i].len() + phantom[i]), i));
        for i in extra {
            if r == 0 {
                break;
            }
            targets[i] += 1;
            r -= 1;
        }
    }
    // Displaced tasks go on top of the targets, not into the share of the worker they avoid.
    for (t, &p) in targets.iter_mut().zip(&phantom) {
        *t = t.saturating_sub(p);
    }

    let mut slots: Vec<Slot> = ws
        .iter()
        .zip(&targets)
        .zip(&phantom)
        .map(|((w, &t), &p)| Slot {
            info: w,
            target: t,
            load: 0,
            hosted: 0,
            phantom: p,
        })
        .collect();
    let mut placed: BTreeMap<TaskId, usize> = BTreeMap::new();
    // per job, per worker counts, to spread a job's tasks.
    let mut job_load: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let nw = ws.len();

    // 2. Keep: own tasks up to the target, then displaced tasks where they are, if allowed.
    for (i, kept) in keepable.iter().enumerate() {
        for t in kept.iter().take(slots[i].target) {
            placed.insert(t.id.clone(), i);
            slots[i].load += 1;
            job_load
                .entry(t.id.job.as_str())
                .or_insert_with(|| vec![0; nw])[i] += 1;
        }
    }
    for t in tasks.iter().filter(|t| displaced.contains_key(&t.id)) {
        if let Some(&i) = previous.get(&t.id).and_then(|w| index.get(w.as_str())) {
            if allowed(i, t) && slots[i].has_room() {
                placed.insert(t.id.clone(), i);
                slots[i].load += 1;
                slots[i].hosted += 1;
                job_load
                    .entry(t.id.job.as_str())
                    .or_insert_with(|| vec![0; nw])[i] += 1;
            }
        }
    }

    // 3. Fill: most constrained orphans first.
    let mut orphans: Vec<(&TaskRequest, usize)> = tasks
        .iter()
        .filter(|t| !placed.contains_key(&t.id))
        .map(|t| {
            let (e, n) = &by_type[&t.job_type];
            let avoided = displaced.get(&t.id).is_some_and(|&a| e[a]);
            (*t, n - usize::from(avoided))
        })
        .collect();
    orphans.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let mut unassigned = Vec::new();
    for (t, _) in orphans {
        // Looked up once per task, not once per task and worker.
        let prev = previous
            .get(&t.id)
            .and_then(|w| index.get(w.as_str()).copied());
        let e = elig(t);
        let avoid = displaced.get(&t.id).copied();
        let jl = job_load.get(t.id.job.as_str());
        let pick = |below: &dyn Fn(&Slot) -> bool| {
            (0..slots.len())
                .filter(|&i| e[i] && avoid != Some(i) && below(&slots[i]))
                .min_by_key(|&i| (prev != Some(i), slots[i].load, jl.map_or(0, |v| v[i]), i))
        };
        let avoided = displaced.get(&t.id).copied();
        let choice = match avoided {
            // Displaced: on top of the targets, anywhere allowed with room; else fall back.
            Some(a) => pick(&|s: &Slot| s.has_room()).or_else(|| slots[a].has_room().then_some(a)),
            None => pick(&|s: &Slot| s.load < s.target).or_else(|| pick(&|s: &Slot| s.has_room())),
        };
        match choice {
            Some(i) => {
                placed.insert(t.id.clone(), i);
                slots[i].load += 1;
                if let Some(a) = avoided {
                    if a == i {
                        // Fallback onto the avoided worker: it runs there, so it counts there once.
                        slots[i].phantom -= 1;
                    } else {
                        slots[i].hosted += 1;
                    }
                }
                job_load
                    .entry(t.id.job.as_str())
                    .or_insert_with(|| vec![0; nw])[i] += 1;
            }
            None => unassigned.push(t.id.clone()),
        }
    }

    // 4. Repair (only does anything when job-type constraints bent the targets). Only
    //    non-displaced tasks move here; balance is judged on `balance_load`.
    let by_id: BTreeMap<&TaskId, &TaskRequest> = tasks.iter().map(|t| (&t.id, *t)).collect();
    let mut budget = n.saturating_mul(ws.len()).max(1);
    'repair: while budget > 0 {
        budget -= 1;
        // A move may have freed room on a worker that an unplaced task accepts.
        let before = unassigned.len();
        unassigned.retain(|id| {
            let t = by_id[id];
            let room = (0..slots.len())
                .filter(|&i| allowed(i, t) && slots[i].has_room())
                .min_by_key(|&i| (slots[i].load, i));
            match room {
                Some(i) => {
                    placed.insert(id.clone(), i);
                    slots[i].load += 1;
                    if displaced.contains_key(id) {
                        slots[i].hosted += 1;
                    }
                    false
                }
                None => true,
            }
        });
        if unassigned.len() != before {
            continue 'repair;
        }
        // Heaviest first, lightest (with room) as destination.
        let mut order: Vec<usize> = (0..slots.len()).collect();
        order.sort_by_key(|&i| (std::cmp::Reverse(slots[i].balance_load()), i));
        for &a in &order {
            for &b in order.iter().rev() {
                if slots[a].balance_load() < slots[b].balance_load() + 2
                    || !slots[b].has_room()
                    || !slots[b].has_balance_room()
                {
                    continue;
                }
                // A task on `a` that `b` accepts; prefer one that is not sticky.
                let candidate = placed
                    .iter()
                    .filter(|(id, &w)| {
                        w == a && !displaced.contains_key(*id) && allowed(b, by_id[id])
                    })
                    .min_by_key(|(id, _)| {
                        (
                            previous
                                .get(*id)
                                .map(|w| w == &slots[a].info.id)
                                .unwrap_or(false),
                            *id,
                        )
                    })
                    .map(|(id, _)| (*id).clone());
                if let Some(id) = candidate {
                    placed.insert(id, b);
                    slots[a].load -= 1;
                    slots[b].load += 1;
                    continue 'repair;
                }
            }
        }
        break;
    }
    // 4b. Repair may have made room elsewhere for a displaced task that fell back onto the
    //     worker it avoids.
    for (id, &a) in &displaced {
        if placed.get(*id) != Some(&a) {
            continue;
        }
        let t = by_id[*id];
        let room = (0..slots.len())
            .filter(|&i| allowed(i, t) && slots[i].has_room())
            .min_by_key(|&i| (slots[i].load, i));
        if let Some(i) = room {
            placed.insert((*id).clone(), i);
            slots[a].load -= 1;
            slots[a].phantom += 1;
            slots[i].load += 1;
            slots[i].hosted += 1;
        }
    }
    // 5. Sticky restore: send a moved (non-displaced) task back to its previous (live,
    //    eligible) worker when that does not make the load multiset any worse (its load is
    //    below the current one's).
    let mut changed = true;
    let mut rounds = 0;
    while changed && rounds < 4 {
        changed = false;
        rounds += 1;
        let moved: Vec<(TaskId, usize, usize)> = placed
            .iter()
            .filter(|(id, _)| !displaced.contains_key(id))
            .filter_map(|(id, &c)| {
                let p = *index.get(previous.get(id)?.as_str())?;
                (p != c && eligible(slots[p].info, by_id[id])).then(|| (id.clone(), c, p))
            })
            .collect();
        for (id, c, p) in moved {
            if slots[p].balance_load() < slots[c].balance_load()
                && slots[p].has_room()
                && slots[p].has_balance_room()
            {
                placed.insert(id, p);
                slots[c].load -= 1;
                slots[p].load += 1;
                changed = true;
            }
        }
    }
    Placement {
        tasks: placed
            .into_iter()
            .map(|(t, i)| (t, slots[i].info.id.clone()))
            .collect(),
        unassigned,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// xorshift64*: a tiny deterministic PRNG for property checks.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn worker(id: &str, capacity: u32) -> WorkerInfo {
        WorkerInfo {
            id: id.into(),
            address: String::new(),
            capacity,
            job_types: vec![],
            version: String::new(),
            stages: Default::default(),
            brokers: String::new(),
        }
    }

    fn tasks(job: &str, n: u32) -> Vec<TaskRequest> {
        (0..n)
            .map(|i| TaskRequest::new(TaskId::new(job, i), None))
            .collect()
    }

    fn kept(p: &Placement, prev: &BTreeMap<TaskId, String>) -> usize {
        p.tasks
            .iter()
            .filter(|(t, w)| prev.get(*t) == Some(*w))
            .count()
    }

    fn assert_balanced(p: &Placement, workers: &[WorkerInfo]) {
        let loads = p.loads();
        for a in workers {
            for b in workers {
                let la = loads.get(a.id.as_str()).copied().unwrap_or(0);
                let lb = loads.get(b.id.as_str()).copied().unwrap_or(0);
                assert!(
                    la <= lb + 1 || lb == b.capacity as usize,
                    "unbalanced: {}={la} vs {}={lb} (cap {}) in {loads:?}",
                    a.id,
                    b.id,
                    b.capacity
                );
                assert!(la <= a.capacity as usize, "over capacity: {}={la}", a.id);
            }
        }
    }

    #[test]
    fn empty_inputs() {
        let p = assign(&[], &[], &BTreeMap::new());
        assert!(p.tasks.is_empty() && p.unassigned.is_empty());
        let p = assign(&tasks("j", 3), &[], &BTreeMap::new());
        assert_eq!(p.unassigned.len(), 3);
        let p = assign(&[], &[worker("a", 1)], &BTreeMap::new());
        assert!(p.tasks.is_empty());
    }

    #[test]
    fn join_moves_the_fewest() {
        let ws: Vec<_> = ["a", "b", "c"].iter().map(|id| worker(id, 100)).collect();
        let ts = tasks("j", 12);
        let first = assign(&ts, &ws, &BTreeMap::new());
        assert_eq!(
            first.loads().values().copied().collect::<Vec<_>>(),
            [4, 4, 4]
        );
        let mut ws2 = ws.clone();
        ws2.push(worker("d", 100));
        let second = assign(&ts, &ws2, &first.tasks);
        assert_eq!(
            second.loads().values().copied().collect::<Vec<_>>(),
            [3, 3, 3, 3]
        );
        assert_eq!(
            second.moved_from(&first.tasks).count(),
            3,
            "only the joiner's share moves"
        );
        assert!(second
            .moved_from(&first.tasks)
            .all(|t| second.tasks[t] == "d"));
    }

    #[test]
    fn leave_moves_only_the_leavers_tasks() {
        let ws: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|id| worker(id, 100))
            .collect();
        let ts = tasks("j", 13);
        let first = assign(&ts, &ws, &BTreeMap::new());
        for leaver in ["a", "b", "c", "d"] {
            let rest: Vec<_> = ws.iter().filter(|w| w.id != leaver).cloned().collect();
            let second = assign(&ts, &rest, &first.tasks);
            let moved: BTreeSet<_> = second.moved_from(&first.tasks).cloned().collect();
            let leavers: BTreeSet<_> = first
                .tasks
                .iter()
                .filter(|(_, w)| *w == leaver)
                .map(|(t, _)| t.clone())
                .collect();
            assert_eq!(moved, leavers, "leaver {leaver}");
            assert_balanced(&second, &rest);
        }
    }

    #[test]
    fn capacity_is_respected_and_overflow_unassigned() {
        let ws = [worker("a", 1), worker("b", 2)];
        let p = assign(&tasks("j", 5), &ws, &BTreeMap::new());
        assert_eq!(p.tasks.len(), 3);
        assert_eq!(p.unassigned.len(), 2);
        assert_balanced(&p, &ws);
        let ws = [worker("a", 1), worker("b", 10)];
        let p = assign(&tasks("j", 6), &ws, &BTreeMap::new());
        assert_eq!(p.loads()["a"], 1);
        assert_eq!(p.loads()["b"], 5);
    }

    #[test]
    fn job_types_are_respected() {
        let mut a = worker("a", 10);
        a.job_types = vec!["x".into()];
        let mut b = worker("b", 10);
        b.job_types = vec!["y".into()];
        let c = worker("c", 10); // accepts any
        let mut ts: Vec<TaskRequest> = (0..4)
            .map(|i| TaskRequest::new(TaskId::new("x", i), Some("x".into())))
            .collect();
        ts.extend((0..4).map(|i| TaskRequest::new(TaskId::new("y", i), Some("y".into()))));
        ts.push(TaskRequest::new(TaskId::new("z", 0), Some("z".into())));
        let ws = [a, b, c];
        let p = assign(&ts, &ws, &BTreeMap::new());
        assert!(p.unassigned.is_empty());
        for (t, w) in &p.tasks {
            let info = ws.iter().find(|x| &x.id == w).unwrap();
            assert!(info.accepts(&t.job), "{t} on {w}");
        }
        assert_eq!(p.tasks[&TaskId::new("z", 0)], "c");
        assert_balanced(&p, &ws);
        // No worker for the type at all: unassigned, not misplaced.
        let only_a = [ws[0].clone()];
        let p = assign(&ts, &only_a, &BTreeMap::new());
        assert_eq!(p.tasks.len(), 4);
        assert_eq!(p.unassigned.len(), 5);
    }

    #[test]
    fn spreads_a_job_across_workers() {
        let ws = [worker("a", 10), worker("b", 10)];
        let mut ts = tasks("j1", 2);
        ts.extend(tasks("j2", 2));
        let p = assign(&ts, &ws, &BTreeMap::new());
        for job in ["j1", "j2"] {
            let on: BTreeSet<_> = p
                .tasks
                .iter()
                .filter(|(t, _)| t.job == job)
                .map(|(_, w)| w.clone())
                .collect();
            assert_eq!(on.len(), 2, "{job} should use both workers: {p:?}");
        }
    }

    /// Brute force: the most tasks that any balanced target vector lets stay put.
    fn best_kept(ts: &[TaskRequest], ws: &[WorkerInfo], prev: &BTreeMap<TaskId, String>) -> usize {
        let n = ts.len();
        let caps: Vec<usize> = ws.iter().map(|w| w.capacity as usize).collect();
        let prev_on: Vec<usize> = ws
            .iter()
            .map(|w| ts.iter().filter(|t| prev.get(&t.id) == Some(&w.id)).count())
            .collect();
        let mut best = 0;
        // All load vectors with loads <= cap that sum to min(n, Σcap) and are balanced.
        let total = n.min(caps.iter().sum());
        let mut loads = vec![0usize; ws.len()];
        fn rec(
            i: usize,
            left: usize,
            loads: &mut Vec<usize>,
            caps: &[usize],
            prev_on: &[usize],
            best: &mut usize,
        ) {
            if i == loads.len() {
                if left != 0 {
                    return;
                }
                for a in 0..loads.len() {
                    for b in 0..loads.len() {
                        if loads[a] > loads[b] + 1 && loads[b] != caps[b] {
                            return;
                        }
                    }
                }
                let k: usize = loads.iter().zip(prev_on).map(|(l, p)| (*l).min(*p)).sum();
                *best = (*best).max(k);
                return;
            }
            for l in 0..=caps[i].min(left) {
                loads[i] = l;
                rec(i + 1, left - l, loads, caps, prev_on, best);
            }
        }
        rec(0, total, &mut loads, &caps, &prev_on, &mut best);
        best
    }

    #[test]
    fn property_balanced_sticky_minimal() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..400 {
            let nw = rng.below(6) as usize;
            let ws: Vec<WorkerInfo> = (0..nw)
                .map(|i| {
                    worker(
                        &format!("w{i}"),
                        1 + rng.below(if case % 2 == 0 { 12 } else { 4 }) as u32,
                    )
                })
                .collect();
            let njobs = 1 + rng.below(3);
            let mut ts = Vec::new();
            for j in 0..njobs {
                ts.extend(tasks(&format!("job{j}"), rng.below(9) as u32));
            }
            // Previous placement over live and dead workers, possibly over capacity.
            let mut prev = BTreeMap::new();
            for t in &ts {
                match rng.below(4) {
                    0 => {}
                    1 => {
                        prev.insert(t.id.clone(), "dead".to_string());
                    }
                    _ if nw > 0 => {
                        prev.insert(t.id.clone(), format!("w{}", rng.below(nw as u64)));
                    }
                    _ => {}
                }
            }
            let p = assign(&ts, &ws, &prev);
            let cap: usize = ws.iter().map(|w| w.capacity as usize).sum();
            assert_eq!(
                p.tasks.len(),
                ts.len().min(cap),
                "case {case}: every task placed while capacity lasts"
            );
            assert_eq!(p.tasks.len() + p.unassigned.len(), ts.len(), "case {case}");
            for w in p.tasks.values() {
                assert!(
                    ws.iter().any(|x| &x.id == w),
                    "case {case}: placed on a dead worker {w}"
                );
            }
            assert_balanced(&p, &ws);
            assert_eq!(
                kept(&p, &prev),
                best_kept(&ts, &ws, &prev),
                "case {case}: not minimal moves; {ws:?} {prev:?} {p:?}"
            );
            // Stable: running again on its own output moves nothing.
            let again = assign(&ts, &ws, &p.tasks);
            assert_eq!(again.tasks, p.tasks, "case {case}: not a fixed point");
        }
    }

    #[test]
    fn property_with_job_types_never_misplaces() {
        let mut rng = Rng(42);
        let types = ["x", "y", "z"];
        for case in 0..300 {
            let nw = 1 + rng.below(5) as usize;
            let ws: Vec<WorkerInfo> = (0..nw)
                .map(|i| {
                    let mut w = worker(&format!("w{i}"), 1 + rng.below(8) as u32);
                    for t in types {
                        if rng.below(2) == 0 {
                            w.job_types.push(t.to_string());
                        }
                    }
                    w
                })
                .collect();
            let ts: Vec<TaskRequest> = (0..rng.below(20) as u32)
                .map(|i| {
                    let ty = types[rng.below(3) as usize];
                    TaskRequest::new(TaskId::new(ty, i), Some(ty.to_string()))
                })
                .collect();
            let p = assign(&ts, &ws, &BTreeMap::new());
            for (t, w) in &p.tasks {
                let info = ws.iter().find(|x| &x.id == w).unwrap();
                assert!(info.accepts(&t.job), "case {case}: {t} on {w}");
            }
            for w in &ws {
                assert!(p.loads().get(w.id.as_str()).copied().unwrap_or(0) <= w.capacity as usize);
            }
            // Anything unassigned really had no eligible worker with room.
            for t in &p.unassigned {
                for w in ws.iter().filter(|w| w.accepts(&t.job)) {
                    assert_eq!(
                        p.loads().get(w.id.as_str()).copied().unwrap_or(0),
                        w.capacity as usize,
                        "case {case}"
                    );
                }
            }
            // Locally balanced: no task could move from a worker 2+ above an eligible one with room.
            let loads = p.loads();
            let load = |w: &WorkerInfo| loads.get(w.id.as_str()).copied().unwrap_or(0);
            for (t, on) in &p.tasks {
                let from = ws.iter().find(|x| &x.id == on).unwrap();
                for to in ws.iter().filter(|w| w.accepts(&t.job)) {
                    assert!(
                        load(from) < load(to) + 2 || load(to) == to.capacity as usize,
                        "case {case}: {t} could move {} -> {}",
                        from.id,
                        to.id
                    );
                }
            }
            let again = assign(&ts, &ws, &p.tasks);
            assert_eq!(
                again.moved_from(&p.tasks).count(),
                0,
                "case {case}: not a fixed point: {ws:?} {p:?} {again:?}"
            );
        }
    }

    /// `tasks` with `avoid` set on `failed`.
    fn with_avoid(ts: &[TaskRequest], failed: &TaskId, worker: &str) -> Vec<TaskRequest> {
        ts.iter()
            .cloned()
            .map(|mut t| {
                if &t.id == failed {
                    t.avoid = Some(worker.to_string());
                }
                t
            })
            .collect()
    }

    #[test]
    fn a_failed_task_moves_alone_and_stays_moved() {
        let ws: Vec<_> = ["a", "b", "c"].iter().map(|id| worker(id, 100)).collect();
        for n in 1..=11 {
            let ts = tasks("j", n);
            let first = assign(&ts, &ws, &BTreeMap::new());
            for (failed, on) in &first.tasks {
                let ts2 = with_avoid(&ts, failed, on);
                let second = assign(&ts2, &ws, &first.tasks);
                let moved: Vec<&TaskId> = second.moved_from(&first.tasks).collect();
                assert_eq!(moved, [failed], "n={n}: only {failed} moves: {second:?}");
                let to = &second.tasks[failed];
                assert_ne!(to, on, "n={n}: never back onto {on}");
                // It went to a least-loaded other worker.
                let before = first.loads();
                let load = |w: &str| before.get(w).copied().unwrap_or(0);
                let least = ws
                    .iter()
                    .filter(|w| &w.id != on)
                    .map(|w| load(&w.id))
                    .min()
                    .unwrap();
                assert_eq!(load(to), least, "n={n}: {failed} -> {to}");
                // Balanced when the failed task counts where it failed.
                let mut bal: BTreeMap<&str, usize> =
                    ws.iter().map(|w| (w.id.as_str(), 0)).collect();
                for (t, w) in &second.tasks {
                    *bal.get_mut(if t == failed { on.as_str() } else { w.as_str() })
                        .unwrap() += 1;
                }
                let (lo, hi) = (bal.values().min().unwrap(), bal.values().max().unwrap());
                assert!(hi - lo <= 1, "n={n}: {bal:?}");
                // A fixed point: the next reconciliation moves nothing, not even back.
                let third = assign(&ts2, &ws, &second.tasks);
                assert_eq!(third.tasks, second.tasks, "n={n}: not a fixed point");
                // Once the avoid is dropped, ordinary rebalancing may move one task.
                let fourth = assign(&ts, &ws, &second.tasks);
                assert!(fourth.moved_from(&second.tasks).count() <= 1);
                assert_balanced(&fourth, &ws);
            }
        }
    }

    #[test]
    fn avoid_changes_nothing_without_an_alternative() {
        let ts = tasks("j", 3);
        let one = [worker("a", 10)];
        let first = assign(&ts, &one, &BTreeMap::new());
        let id = TaskId::new("j", 1);
        let p = assign(&with_avoid(&ts, &id, "a"), &one, &first.tasks);
        assert_eq!(p.tasks, first.tasks, "a single worker keeps the task");
        // Avoiding a worker that is gone changes nothing either.
        let two = [worker("a", 10), worker("b", 10)];
        let first = assign(&ts, &two, &BTreeMap::new());
        let p = assign(&with_avoid(&ts, &id, "zz"), &two, &first.tasks);
        assert_eq!(p.tasks, first.tasks);
        // Nor does avoiding the only worker that accepts the job type.
        let mut a = worker("a", 10);
        a.job_types = vec!["x".into()];
        let mut b = worker("b", 10);
        b.job_types = vec!["y".into()];
        let ts: Vec<TaskRequest> = (0..2)
            .map(|i| TaskRequest {
                id: TaskId::new("x", i),
                job_type: Some("x".into()),
                avoid: (i == 0).then(|| "a".to_string()),
            })
            .collect();
        let p = assign(&ts, &[a, b], &BTreeMap::new());
        assert!(p.tasks.values().all(|w| w == "a"), "{p:?}");
    }

    #[test]
    fn a_displaced_task_falls_back_when_the_others_are_full() {
        let ws = [worker("a", 10), worker("b", 1)];
        let ts = tasks("j", 4);
        let first = assign(&ts, &ws, &BTreeMap::new());
        assert_eq!(first.loads()["b"], 1);
        let (failed, _) = first.tasks.iter().find(|(_, w)| *w == "a").unwrap();
        let p = assign(&with_avoid(&ts, failed, "a"), &ws, &first.tasks);
        assert_eq!(p.tasks, first.tasks, "b is full: the task stays on a");
        assert!(p.unassigned.is_empty());
    }

    #[test]
    fn property_avoid_respected_stable_and_minimal() {
        let mut rng = Rng(0xA501D);
        for case in 0..1000 {
            let nw = 1 + rng.below(5) as usize;
            let ws: Vec<WorkerInfo> = (0..nw)
                .map(|i| worker(&format!("w{i}"), 1 + rng.below(6) as u32))
                .collect();
            let ts = tasks("j", rng.below(14) as u32);
            let first = assign(&ts, &ws, &BTreeMap::new());
            let Some((failed, on)) = first
                .tasks
                .iter()
                .nth(rng.below(first.tasks.len() as u64) as usize)
            else {
                continue;
            };
            let ts2 = with_avoid(&ts, failed, on);
            let p = assign(&ts2, &ws, &first.tasks);
            let loads = p.loads();
            let load = |w: &WorkerInfo| loads.get(w.id.as_str()).copied().unwrap_or(0);
            for w in &ws {
                assert!(load(w) <= w.capacity as usize, "case {case}: over capacity");
            }
            assert_eq!(
                p.tasks.len(),
                first.tasks.len(),
                "case {case}: nothing dropped"
            );
            if &p.tasks[failed] == on {
                assert!(
                    ws.iter()
                        .filter(|w| &w.id != on)
                        .all(|w| load(w) == w.capacity as usize),
                    "case {case}: {failed} stayed on {on} although another worker had room: {p:?}"
                );
            }
            let moved: Vec<&TaskId> = p.moved_from(&first.tasks).collect();
            assert!(
                moved.is_empty() || moved == [failed],
                "case {case}: something else moved: {moved:?}\n{ws:?}\n{first:?}\n{p:?}"
            );
            let again = assign(&ts2, &ws, &p.tasks);
            assert_eq!(again.tasks, p.tasks, "case {case}: not a fixed point");
        }
    }

    #[test]
    fn property_avoid_with_job_types_and_any_previous() {
        let mut rng = Rng(7);
        let types = ["x", "y"];
        for case in 0..5000 {
            let nw = 1 + rng.below(4) as usize;
            let ws: Vec<WorkerInfo> = (0..nw)
                .map(|i| {
                    let mut w = worker(&format!("w{i}"), 1 + rng.below(5) as u32);
                    for t in types {
                        if rng.below(3) > 0 {
                            w.job_types.push(t.to_string());
                        }
                    }
                    w
                })
                .collect();
            let ts: Vec<TaskRequest> = (0..rng.below(12) as u32)
                .map(|i| {
                    let ty = types[rng.below(2) as usize];
                    let mut t = TaskRequest::new(TaskId::new(ty, i), Some(ty.to_string()));
                    if rng.below(3) == 0 {
                        t.avoid = Some(format!("w{}", rng.below(nw as u64 + 1)));
                    }
                    t
                })
                .collect();
            let mut prev = BTreeMap::new();
            for t in &ts {
                if rng.below(4) > 0 {
                    prev.insert(t.id.clone(), format!("w{}", rng.below(nw as u64 + 1)));
                }
            }
            let p = assign(&ts, &ws, &prev);
            let loads = p.loads();
            let load = |w: &WorkerInfo| loads.get(w.id.as_str()).copied().unwrap_or(0);
            for (t, on) in &p.tasks {
                let info = ws.iter().find(|x| &x.id == on).unwrap();
                assert!(info.accepts(&t.job), "case {case}: {t} on {on}");
                let req = ts.iter().find(|r| &r.id == t).unwrap();
                if req.avoid.as_ref() == Some(on) {
                    assert!(
                        ws.iter()
                            .filter(|w| &w.id != on && w.accepts(&t.job))
                            .all(|w| load(w) == w.capacity as usize),
                        "case {case}: {t} on avoided {on} although another had room: {ws:?} {p:?}"
                    );
                }
            }
            for w in &ws {
                assert!(load(w) <= w.capacity as usize, "case {case}");
            }
            for t in &p.unassigned {
                for w in ws.iter().filter(|w| w.accepts(&t.job)) {
                    assert_eq!(load(w), w.capacity as usize, "case {case}: {t} unassigned");
                }
            }
            // Settles (no oscillation): with constraints and an arbitrary previous placement a
            // second pass may still place a task the first could not; then nothing moves.
            let mut cur = p;
            let mut passes = 0;
            loop {
                let next = assign(&ts, &ws, &cur.tasks);
                if next.tasks == cur.tasks {
                    break;
                }
                passes += 1;
                assert!(
                    passes < 3,
                    "case {case}: does not settle: {ws:?} {ts:?} {cur:?} {next:?}"
                );
                cur = next;
            }
        }
    }
}
