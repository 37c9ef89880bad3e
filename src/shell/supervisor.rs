//! The background tasks that must run as long as the server does (watches, reloads, the
//! certificate's reconcile loop). None of them ends on its own, so one that ends or panics is a
//! broken replica: [`Supervisor::failed`] reports it and `serve` exits, for the kubelet to restart it.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};

#[derive(Default)]
pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Supervisor {
    /// Runs `task` in the background under `name` (used in the failure message).
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// The first task to end or panic, as an error naming it; pending for ever while all run
    /// (or when there are none).
    pub async fn failed(&mut self) -> anyhow::Error {
        let Some(ended) = self.tasks.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (id, how) = match ended {
            Ok((id, ())) => (id, "ended".to_owned()),
            Err(err) if err.is_panic() => (err.id(), "panicked".to_owned()),
            Err(err) => (err.id(), format!("stopped: {err}")),
        };
        let name = self.names.get(&id).copied().unwrap_or("a background task");
        anyhow::anyhow!("background task {name} {how}; the replica cannot keep its inputs current")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn forever() {
        std::future::pending::<()>().await
    }

    #[tokio::test]
    async fn a_task_that_panics_or_ends_is_reported_by_name() {
        let mut tasks = Supervisor::default();
        tasks.spawn("config watch", forever());
        tasks.spawn("ServiceAccount watch", async { panic!("killed by the test") });
        let failure = tasks.failed().await.to_string();
        assert!(failure.contains("ServiceAccount watch panicked"), "{failure}");

        tasks.spawn("certificate reload", async {});
        let failure = tasks.failed().await.to_string();
        assert!(failure.contains("certificate reload ended"), "{failure}");
    }

    #[tokio::test]
    async fn running_tasks_are_not_failures() {
        let mut tasks = Supervisor::default();
        assert!(
            tokio::time::timeout(Duration::from_millis(20), tasks.failed())
                .await
                .is_err()
        );
        tasks.spawn("config watch", forever());
        assert!(
            tokio::time::timeout(Duration::from_millis(20), tasks.failed())
                .await
                .is_err()
        );
    }
}
