//! How much CPU time the process has used, from `/proc/self/stat`: what a
//! CPU profile's samples are measured against (its coverage).

/// The process's CPU time so far, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessCpu(u64);

impl ProcessCpu {
    /// `/proc`'s clock tick: `USER_HZ`, 100 on every Linux architecture
    /// this builds for (what `sysconf(_SC_CLK_TCK)` answers).
    const TICKS_PER_SECOND: f64 = 100.0;

    /// `None` off Linux or if `/proc` cannot be read.
    pub fn read() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/self/stat").ok()?)
    }

    /// `utime + stime`, fields 14 and 15 of `stat`: counted after the
    /// command name, which is in parentheses and may hold spaces.
    fn parse(stat: &str) -> Option<Self> {
        let (_, after_name) = stat.rsplit_once(')')?;
        let mut fields = after_name.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some(Self(utime + stime))
    }

    pub(crate) fn seconds_since(self, earlier: Self) -> f64 {
        self.0.saturating_sub(earlier.0) as f64 / Self::TICKS_PER_SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_cpu_is_utime_plus_stime_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) worker) S 1 4242 4242 0 -1 4194560 2893 0 0 0 \
                    731 269 0 0 20 0 6 0 1234 0 0";

        let cpu = ProcessCpu::parse(stat).unwrap();

        assert_eq!(cpu, ProcessCpu(1000));
        assert_eq!(cpu.seconds_since(ProcessCpu(500)), 5.0);
        assert_eq!(ProcessCpu::parse("4242 (cut"), None);
    }
}
