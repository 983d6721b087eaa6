//! Balanced, sticky placement of tasks on workers: a pure function.
//!
//! Owns: [`assign`], which from the tasks, the live workers and the previous
//! placement computes the next placement so that every task runs on a live
//! worker that accepts its job type, loads differ by at most one (a worker
//! full to its capacity may stay below the others), and as few tasks as
//! possible move.
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
//!
//! Without job-type constraints steps 1–3 already give loads within one and
//! the fewest possible moves (checked against brute force in the tests).

use std::collections::BTreeMap;

use super::model::{TaskId, WorkerInfo};

/// A task to place, with the job type a worker must accept to run it (if any).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRequest {
    /// Task id.
    pub id: TaskId,
    /// Required job type (`None`: any worker).
    pub job_type: Option<String>,
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
/// let w = |id: &str| WorkerInfo { id: id.into(), address: String::new(), capacity: 10, job_types: vec![], version: String::new() };
/// let tasks: Vec<TaskRequest> = (0..4).map(|i| TaskRequest { id: TaskId::new("j", i), job_type: None }).collect();
/// let first = assign(&tasks, &[w("a")], &BTreeMap::new());
/// assert_eq!(first.loads()["a"], 4);
/// // "b" joins: exactly two tasks move to it.
/// let second = assign(&tasks, &[w("a"), w("b")], &first.tasks);
/// assert_eq!(second.moved_from(&first.tasks).count(), 2);
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

    // Previous tasks each live worker could keep.
    let mut keepable: Vec<Vec<&TaskRequest>> = vec![Vec::new(); ws.len()];
    for t in &tasks {
        if let Some(&i) = previous.get(&t.id).and_then(|w| index.get(w.as_str())) {
            if eligible(ws[i], t) {
                keepable[i].push(t);
            }
        }
    }

    // 1. Targets by water-filling.
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
        extra.sort_by_key(|&i| (std::cmp::Reverse(keepable[i].len()), i));
        for i in extra {
            if r == 0 {
                break;
            }
            targets[i] += 1;
            r -= 1;
        }
    }

    let mut slots: Vec<Slot> = ws
        .iter()
        .zip(&targets)
        .map(|(w, &t)| Slot {
            info: w,
            target: t,
            load: 0,
        })
        .collect();
    let mut placed: BTreeMap<TaskId, usize> = BTreeMap::new();
    // per (worker, job) counts, to spread a job's tasks.
    let mut job_load: BTreeMap<(usize, &str), usize> = BTreeMap::new();

    // 2. Keep.
    for (i, kept) in keepable.iter().enumerate() {
        for t in kept.iter().take(slots[i].target) {
            placed.insert(t.id.clone(), i);
            slots[i].load += 1;
            *job_load.entry((i, t.id.job.as_str())).or_insert(0) += 1;
        }
    }

    // 3. Fill: most constrained orphans first.
    let mut orphans: Vec<(&TaskRequest, usize)> = tasks
        .iter()
        .filter(|t| !placed.contains_key(&t.id))
        .map(|t| (*t, slots.iter().filter(|s| eligible(s.info, t)).count()))
        .collect();
    orphans.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.id.cmp(&b.0.id)));
    let mut unassigned = Vec::new();
    for (t, _) in orphans {
        let pick = |below: &dyn Fn(&Slot) -> bool| {
            (0..slots.len())
                .filter(|&i| eligible(slots[i].info, t) && below(&slots[i]))
                .min_by_key(|&i| {
                    let was_here = previous
                        .get(&t.id)
                        .map(|w| *w == slots[i].info.id)
                        .unwrap_or(false);
                    (
                        !was_here,
                        slots[i].load,
                        job_load.get(&(i, t.id.job.as_str())).copied().unwrap_or(0),
                        i,
                    )
                })
        };
        let choice = pick(&|s: &Slot| s.load < s.target)
            .or_else(|| pick(&|s: &Slot| s.load < s.info.capacity as usize));
        match choice {
            Some(i) => {
                placed.insert(t.id.clone(), i);
                slots[i].load += 1;
                *job_load.entry((i, t.id.job.as_str())).or_insert(0) += 1;
            }
            None => unassigned.push(t.id.clone()),
        }
    }

    // 4. Repair (only does anything when job-type constraints bent the targets).
    let by_id: BTreeMap<&TaskId, &TaskRequest> = tasks.iter().map(|t| (&t.id, *t)).collect();
    let mut budget = n.saturating_mul(ws.len()).max(1);
    'repair: while budget > 0 {
        budget -= 1;
        // A move may have freed room on a worker that an unplaced task accepts.
        let before = unassigned.len();
        unassigned.retain(|id| {
            let t = by_id[id];
            let room = (0..slots.len())
                .filter(|&i| {
                    eligible(slots[i].info, t) && slots[i].load < slots[i].info.capacity as usize
                })
                .min_by_key(|&i| (slots[i].load, i));
            match room {
                Some(i) => {
                    placed.insert(id.clone(), i);
                    slots[i].load += 1;
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
        order.sort_by_key(|&i| (std::cmp::Reverse(slots[i].load), i));
        for &a in &order {
            for &b in order.iter().rev() {
                if slots[a].load < slots[b].load + 2
                    || slots[b].load >= slots[b].info.capacity as usize
                {
                    continue;
                }
                // A task on `a` that `b` accepts; prefer one that is not sticky.
                let candidate = placed
                    .iter()
                    .filter(|(id, &w)| w == a && eligible(slots[b].info, by_id[id]))
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
    // 5. Sticky restore: send a moved task back to its previous (live, eligible) worker when
    //    that does not make the load multiset any worse (its load is below the current one's).
    let mut changed = true;
    let mut rounds = 0;
    while changed && rounds < 4 {
        changed = false;
        rounds += 1;
        let moved: Vec<(TaskId, usize, usize)> = placed
            .iter()
            .filter_map(|(id, &c)| {
                let p = *index.get(previous.get(id)?.as_str())?;
                (p != c && eligible(slots[p].info, by_id[id])).then(|| (id.clone(), c, p))
            })
            .collect();
        for (id, c, p) in moved {
            if slots[p].load < slots[c].load && slots[p].load < slots[p].info.capacity as usize {
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
        }
    }

    fn tasks(job: &str, n: u32) -> Vec<TaskRequest> {
        (0..n)
            .map(|i| TaskRequest {
                id: TaskId::new(job, i),
                job_type: None,
            })
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
            .map(|i| TaskRequest {
                id: TaskId::new("x", i),
                job_type: Some("x".into()),
            })
            .collect();
        ts.extend((0..4).map(|i| TaskRequest {
            id: TaskId::new("y", i),
            job_type: Some("y".into()),
        }));
        ts.push(TaskRequest {
            id: TaskId::new("z", 0),
            job_type: Some("z".into()),
        });
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
                    TaskRequest {
                        id: TaskId::new(ty, i),
                        job_type: Some(ty.to_string()),
                    }
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
}
