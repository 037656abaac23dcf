//! Concurrent HTTP load from inside the cluster: a client pod runs parallel `wget` loops
//! against a URL (a Service, by its cluster DNS name) and counts every answer and every
//! request that got none. Bounded in count and time: the loops stop by themselves.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;

use crate::{ClusterClient, Output, eventually};

/// Parallel request loops in the load pod.
const LOOPS: u32 = 4;
/// Bounds of the load: requests per loop, and seconds in all.
const MAX_REQUESTS_PER_LOOP: u32 = 20_000;
const MAX_SECONDS: u32 = 400;
/// What the service's root route answers.
const EXPECTED: &str = "Hello KEA!";

/// `loops` loops of `wget` against the URL `$1`, each counting answers `$5` and everything
/// else (a refused or reset connection, a timeout, an error status). Every 10 requests a
/// loop writes its counts to /tmp/count.N; /tmp/stop ends them. Prints the sums and the
/// first failures. Each loop pauses 20 ms between requests: every `wget` is a new connection,
/// and unpaced loops would use up the pod's 28,232 local ports (each held a minute in
/// TIME_WAIT) within a minute, failing requests for the client's sake.
const SCRIPT: &str = r#"
url=$1; loops=$2; max=$3; seconds=$4; expected=$5
deadline=$(( $(date +%s) + seconds ))
rm -f /tmp/stop /tmp/count.* /tmp/failures
run() {
  ok=0; failed=0; n=0
  while [ ! -f /tmp/stop ] && [ $n -lt "$max" ] && [ "$(date +%s)" -lt $deadline ]; do
    n=$((n + 1))
    answer=$(timeout 5 wget -q -O - "$url" 2>&1)
    if [ "$answer" = "$expected" ]; then ok=$((ok + 1)); else
      failed=$((failed + 1)); echo "$(date +%T) $answer" >> /tmp/failures; fi
    [ $((n % 10)) = 0 ] && echo "$ok $failed" > /tmp/count.$1
    usleep 20000
  done
  echo "$ok $failed" > /tmp/count.$1
}
for i in $(seq "$loops"); do run "$i" & done
wait
cat /tmp/count.* | awk '{ok += $1; failed += $2} END {print ok, failed}'
head -n 20 /tmp/failures 2>/dev/null || true
"#;

/// Requests answered as expected, and requests that were not, so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Answered with the expected body.
    pub ok: u64,
    /// Anything else, including no answer at all.
    pub failed: u64,
}

/// What a stopped load reports.
#[derive(Debug)]
pub struct Report {
    /// The totals.
    pub counts: Counts,
    /// The load pod's output: the totals and the first failures, with their times.
    pub output: String,
}

/// A running load.
pub struct Load {
    pod: ClusterClient,
    running: JoinHandle<anyhow::Result<Output>>,
}

impl Load {
    /// Starts a client pod named `name` with `labels` (what the target's NetworkPolicy must
    /// let in), on `node` when given, waits until one request to `url` gets the expected
    /// answer (a NetworkPolicy engine admits a new pod only after it has seen it), then starts
    /// the loops and waits until they have `warm_up` answers.
    pub async fn start(
        client: &Client,
        namespace: &str,
        name: &str,
        labels: BTreeMap<String, String>,
        node: Option<&str>,
        url: &str,
        warm_up: u64,
    ) -> anyhow::Result<Self> {
        let pod = ClusterClient::start_on(client, namespace, name, labels, node).await?;
        eventually(
            &format!("{name} answered by {url}"),
            Duration::from_secs(60),
            || {
                let pod = pod.clone();
                async move {
                    let answer = pod.http(url, None).await?;
                    Ok((answer.body == EXPECTED).then_some(()))
                }
            },
        )
        .await?;
        let args: Vec<String> = [
            "sh",
            "-c",
            SCRIPT,
            "sh",
            url,
            &LOOPS.to_string(),
            &MAX_REQUESTS_PER_LOOP.to_string(),
            &MAX_SECONDS.to_string(),
            EXPECTED,
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        let running = {
            let pod = pod.clone();
            tokio::spawn(async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                pod.exec(&args, Duration::from_secs(u64::from(MAX_SECONDS)))
                    .await
            })
        };
        let load = Self { pod, running };
        load.wait_for_answers(warm_up, Duration::from_secs(60))
            .await?;
        Ok(load)
    }

    /// The counts so far.
    pub async fn counts(&self) -> anyhow::Result<Counts> {
        let output = self
            .pod
            .exec(
                &["sh", "-c", "cat /tmp/count.* 2>/dev/null || true"],
                Duration::from_secs(5),
            )
            .await?;
        Ok(sum_counts(&output.stdout))
    }

    /// Waits until at least `answers` requests were answered in all; returns the counts then.
    pub async fn wait_for_answers(
        &self,
        answers: u64,
        timeout: Duration,
    ) -> anyhow::Result<Counts> {
        eventually(
            &format!("{answers} answers to the load"),
            timeout,
            || async {
                let counts = self.counts().await?;
                Ok((counts.ok >= answers).then_some(counts))
            },
        )
        .await
    }

    /// Stops the loops and returns their totals.
    pub async fn stop(self) -> anyhow::Result<Report> {
        self.pod
            .exec(&["touch", "/tmp/stop"], Duration::from_secs(5))
            .await?;
        let output = self.running.await??;
        let counts = sum_counts(output.stdout.lines().next().unwrap_or_default());
        Ok(Report {
            counts,
            output: output.stdout,
        })
    }
}

/// Sums the `ok failed` lines of the loops.
fn sum_counts(text: &str) -> Counts {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace().map(|f| f.parse::<u64>().ok());
            Some((fields.next()??, fields.next()??))
        })
        .fold(Counts::default(), |total, (ok, failed)| Counts {
            ok: total.ok + ok,
            failed: total.failed + failed,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_counts_of_the_loops() {
        assert_eq!(
            sum_counts("10 0\n5 1\n\nbad\n"),
            Counts { ok: 15, failed: 1 }
        );
    }
}
