//! Child processes: started with their output in a log file, killed when dropped (on success,
//! error and panic alike), and measured through `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Clock ticks per second of `/proc/PID/stat` times (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A running child; killed and reaped when dropped.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// When it was spawned.
    pub started: Instant,
}

impl Proc {
    /// Spawns `command` with standard output and error appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Proc> {
        let out = std::fs::File::create(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("cannot reopen {}", log.display()))?;
        let started = Instant::now();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name} ({command:?})"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            started,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits until a line of the log satisfies `pick`, and returns what it picked. Fails when
    /// the process exits or `timeout` passes first, quoting the end of the log.
    pub async fn wait_for_line<T>(
        &mut self,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if let Some(found) = text.lines().find_map(&pick) {
                return Ok(found);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; its log ends with:\n{}",
                    self.name,
                    tail(&text)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {timeout:?}; its log ends with:\n{}",
                    self.name,
                    tail(&text)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Fails when the process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                tail(&text)
            );
        }
        Ok(())
    }

    /// Resident set size, bytes (`VmRSS`).
    pub fn rss(&self) -> anyhow::Result<u64> {
        let path = format!("/proc/{}/status", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        parse_vm_rss(&text).with_context(|| format!("no VmRSS in {path}"))
    }

    /// CPU time used so far (user + system).
    pub fn cpu(&self) -> anyhow::Result<Duration> {
        let path = format!("/proc/{}/stat", self.pid());
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let ticks = parse_cpu_ticks(&text).with_context(|| format!("cannot parse {path}"))?;
        Ok(Duration::from_secs_f64(ticks as f64 / TICKS_PER_SECOND))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(15);
    lines.get(from..).unwrap_or_default().join("\n")
}

/// `VmRSS:   1234 kB` → bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) of `/proc/PID/stat`, in clock ticks. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files() {
        let status = "Name:\tentrepot\nVmPeak:\t  9 kB\nVmRSS:\t   20480 kB\nThreads: 3\n";
        assert_eq!(parse_vm_rss(status), Some(20480 * 1024));
        let stat = "4242 (entre pot) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 31 0 0 20 0 4 0";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }
}
