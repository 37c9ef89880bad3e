//! The background tasks that must run as long as the server does (watches, reloads, the
//! certificate's reconcile loop, the metrics listener, the signal handler). None of them ends on
//! its own before shutdown, so one that ends or panics is a broken replica:
//! [`Supervisor::failed`] reports it and the binary exits, for the kubelet to restart it. Once
//! shutdown has begun ([`Supervisor::stopper`]), tasks that end are draining, not failing.

use std::collections::HashMap;
use std::future::Future;

use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

pub struct Supervisor {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    stop: watch::Sender<bool>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Supervisor {
            tasks: JoinSet::new(),
            names: HashMap::new(),
            stop: watch::Sender::new(false),
        }
    }
}

impl Supervisor {
    /// Runs `task` in the background under `name` (used in the failure message).
    pub fn spawn(&mut self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.names.insert(id, name);
    }

    /// Turns true when shutdown begins: servers stop accepting and drain.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Begins shutdown, for whichever task decides it (the signal handler).
    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }

    /// The first task to end or panic before shutdown, as an error naming it; pending for ever
    /// while all run (or when there are none) and once shutdown has begun.
    pub async fn failed(&mut self) -> anyhow::Error {
        loop {
            let Some(ended) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            let (id, how) = match ended {
                Ok((id, ())) => (id, "ended".to_owned()),
                Err(err) if err.is_panic() => (err.id(), "panicked".to_owned()),
                Err(err) => (err.id(), format!("stopped: {err}")),
            };
            let name = self.names.remove(&id).unwrap_or("a background task");
            if *self.stop.borrow() && how == "ended" {
                continue;
            }
            return anyhow::anyhow!("background task {name} {how}; the replica cannot keep its inputs current");
        }
    }
}

/// Resolves on SIGTERM (the kubelet's stop) or Ctrl-C.
pub async fn termination() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = terminate => {},
        _ = tokio::signal::ctrl_c() => {},
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

    #[tokio::test]
    async fn after_the_stop_an_ending_task_is_draining_but_a_panic_still_fails() {
        let mut tasks = Supervisor::default();
        let mut stopping = tasks.stopping();
        tasks.spawn("metrics listener", async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        });
        tasks.stopper().send_replace(true);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), tasks.failed())
                .await
                .is_err(),
            "a listener that drained after the stop is not a failure"
        );
        tasks.spawn("config watch", async { panic!("killed by the test") });
        let failure = tasks.failed().await.to_string();
        assert!(failure.contains("config watch panicked"), "{failure}");
    }
}
