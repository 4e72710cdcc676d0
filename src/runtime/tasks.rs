//! The runtime's live tasks, as its own spawn and terminate hooks report
//! them: for the task dump (`/debug/pprof/tasks`).
//!
//! Tokio's `Handle::dump` stops every worker at a barrier to trace the
//! tasks; in tokio 1.54 a dump that meets a busy or blocked worker can
//! leave a worker parked at that barrier for good (tokio-rs/tokio#7478), and
//! the runtime then never shuts down. This list asks nothing of the
//! workers: the hooks run where tokio spawns and completes a task, and a
//! dump copies the list under its locks. The price is what it cannot show:
//! where each task waits (the tree of `.await`s a trace gives).

use std::{
    cell::Cell,
    future::Future,
    hash::BuildHasher,
    panic::Location,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use parking_lot::{Mutex, MutexGuard};
use rustc_hash::{FxBuildHasher, FxHashMap};
use tokio::task::{Id, JoinHandle};

/// Locks the list is split over, so that workers spawning and completing
/// tasks at once (hyper spawns one per HTTP/2 stream, so one per call)
/// seldom wait for each other.
const SHARDS: usize = 16;

thread_local! {
    /// The name [`TaskList::spawn`] gives the task it is spawning: the spawn
    /// hook runs on the spawning thread, so the task is listed with its
    /// name from its first moment.
    static NAMING: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The live tasks of one runtime, once [`TaskList::record`] has put its
/// hooks on the runtime's builder. Cloning shares the list.
#[derive(Debug, Clone, Default)]
pub struct TaskList(Arc<Shards>);

#[derive(Debug, Default)]
struct Shards {
    /// Keyed by tokio's task ids, which count up from 1 and no client
    /// chooses: Fx hashing, one multiplication. std's SipHash, three
    /// hashes a task (its shard, its insert, its removal), was about 540
    /// of the ~900 instructions the hooks cost a call (callgrind).
    tasks: [Mutex<FxHashMap<Id, Task>>; SHARDS],
    /// Whether a runtime reports here: a list nobody fills is not an empty
    /// runtime.
    recorded: AtomicBool,
}

#[derive(Debug, Clone, Copy)]
struct Task {
    spawned_at: &'static Location<'static>,
    spawned: Instant,
    name: Option<&'static str>,
}

/// One live task, as a dump shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTask {
    pub id: Id,
    /// Given by [`TaskList::spawn`]; most tasks have none.
    pub name: Option<&'static str>,
    /// Where `tokio::spawn` (or its like) was called.
    pub spawned_at: &'static Location<'static>,
    pub age: Duration,
}

impl TaskList {
    /// Makes the runtime `builder` builds report its tasks here (tokio's
    /// `on_task_spawn` and `on_task_terminate`, which a runtime has one of
    /// each).
    pub fn record<'b>(
        &self,
        builder: &'b mut tokio::runtime::Builder,
    ) -> &'b mut tokio::runtime::Builder {
        self.0.recorded.store(true, Ordering::Relaxed);
        let spawned = self.clone();
        let terminated = self.clone();
        builder
            .on_task_spawn(move |meta| {
                let task = Task {
                    spawned_at: meta.spawned_at(),
                    spawned: Instant::now(),
                    name: NAMING.take(),
                };
                spawned.shard(meta.id()).insert(meta.id(), task);
            })
            .on_task_terminate(move |meta| {
                terminated.shard(meta.id()).remove(&meta.id());
            })
    }

    /// Spawns `future` as a task called `name` (shown by tokio-console and
    /// the tracing spans too) and remembers the name for task dumps. The
    /// task keeps the spawner's subscriber: it logs where its app logs.
    /// The task's spawn location is the caller's.
    #[track_caller]
    pub fn spawn<F>(&self, name: &'static str, future: F) -> std::io::Result<JoinHandle<F::Output>>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        use tracing::instrument::WithSubscriber as _;
        let future = future.with_current_subscriber();
        NAMING.set(Some(name));
        #[cfg(tokio_unstable)]
        let handle = tokio::task::Builder::new().name(name).spawn(future);
        #[cfg(not(tokio_unstable))]
        let handle = Ok(tokio::spawn(future));
        // Not taken when the runtime does not report here.
        NAMING.set(None);
        handle
    }

    /// The tasks alive now, oldest first; `None` when no runtime reports
    /// here (it was not built with [`TaskList::record`]).
    pub fn live(&self) -> Option<Vec<LiveTask>> {
        if !self.0.recorded.load(Ordering::Relaxed) {
            return None;
        }
        let now = Instant::now();
        let mut live: Vec<LiveTask> = (0..SHARDS)
            .flat_map(|shard| {
                let tasks = self.0.tasks[shard].lock();
                tasks
                    .iter()
                    .map(|(&id, task)| LiveTask {
                        id,
                        name: task.name,
                        spawned_at: task.spawned_at,
                        age: now.saturating_duration_since(task.spawned),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        live.sort_by_key(|task| std::cmp::Reverse(task.age));
        Some(live)
    }

    fn shard(&self, id: Id) -> MutexGuard<'_, FxHashMap<Id, Task>> {
        let index = FxBuildHasher.hash_one(id) as usize % SHARDS;
        self.0.tasks[index].lock()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(tasks: &TaskList) -> tokio::runtime::Runtime {
        tasks
            .record(tokio::runtime::Builder::new_current_thread().enable_all())
            .build()
            .unwrap()
    }

    #[test]
    fn a_list_no_runtime_reports_to_is_none_not_empty() {
        assert_eq!(TaskList::default().live(), None);
    }

    #[test]
    fn live_tasks_are_listed_with_their_names_and_finished_ones_are_not() {
        let tasks = TaskList::default();
        runtime(&tasks).block_on(async {
            let (release, released) = tokio::sync::oneshot::channel::<()>();
            let waiting = tasks
                .spawn("waiter", async move {
                    let _ = released.await;
                })
                .unwrap();
            let finished = tokio::spawn(async {});
            let finished_id = finished.id();
            finished.await.unwrap();

            let live = tasks.live().unwrap();

            let waiter = live.iter().find(|task| task.id == waiting.id());
            assert_eq!(
                waiter.and_then(|task| task.name),
                Some("waiter"),
                "{live:?}"
            );
            assert!(
                waiter.unwrap().spawned_at.file().ends_with("tasks.rs"),
                "{live:?}"
            );
            assert!(live.iter().all(|task| task.id != finished_id), "{live:?}");
            release.send(()).unwrap();
            let waiting_id = waiting.id();
            waiting.await.unwrap();
            assert!(
                tasks
                    .live()
                    .unwrap()
                    .iter()
                    .all(|task| task.id != waiting_id),
                "a finished named task is forgotten"
            );
        });
    }
}
