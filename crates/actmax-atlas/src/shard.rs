//! Which part of an atlas one process renders: shard `K/N` owns every N-th tile in plan
//! order, starting at K — stable, balanced across layers (deep and shallow tiles cost
//! differently), and the same whichever scheduler started the process.

use crate::{AtlasError, Result};

/// Shard `index` of `count` (0-based: `0/4` … `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, from 0.
    pub index: usize,
    /// How many shards in all.
    pub count: usize,
}

impl Shard {
    /// A shard with its range checked.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 {
            return Err(AtlasError::Request("there must be at least one shard (--shard K/N with N >= 1)".into()));
        }
        if index >= count {
            return Err(AtlasError::Request(format!(
                "shard {index} of {count} does not exist: K counts from 0, so valid shards are 0/{count} … {}/{count}",
                count - 1
            )));
        }
        Ok(Self { index, count })
    }

    /// `K/N`, as `--shard` takes it.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || AtlasError::Request(format!("--shard wants K/N with 0 <= K < N (e.g. 0/4), got `{s}`"));
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n) = (k.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
        Self::new(k, n)
    }

    /// The shard a scheduler asked for: a Kubernetes Indexed Job's `JOB_COMPLETION_INDEX`
    /// (with `shards`, the Job's completions), or a Slurm job array's
    /// `SLURM_ARRAY_TASK_ID` (less `SLURM_ARRAY_TASK_MIN`) of `SLURM_ARRAY_TASK_COUNT`
    /// (or `shards`). `None` when neither is set: the whole atlas.
    pub fn from_env(shards: Option<usize>, env: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let number = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse::<usize>()
                    .map(Some)
                    .map_err(|_| AtlasError::Request(format!("${name} is `{v}`, not a non-negative whole number"))),
            }
        };
        if let Some(k) = number("JOB_COMPLETION_INDEX")? {
            let n = shards.ok_or_else(|| {
                AtlasError::Request(
                    "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shards N, the Job's completions"
                        .into(),
                )
            })?;
            return Self::new(k, n).map(Some);
        }
        if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
            let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            let n = match shards {
                Some(n) => n,
                None => number("SLURM_ARRAY_TASK_COUNT")?.ok_or_else(|| {
                    AtlasError::Request(
                        "SLURM_ARRAY_TASK_ID is set without SLURM_ARRAY_TASK_COUNT: pass --shards N".into(),
                    )
                })?,
            };
            let k = id.checked_sub(min).ok_or_else(|| {
                AtlasError::Request(format!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}"))
            })?;
            return Self::new(k, n).map(Some);
        }
        match shards {
            Some(_) => Err(AtlasError::Request(
                "--shards N takes the shard from JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID, and neither is set; \
                 use --shard K/N"
                    .into(),
            )),
            None => Ok(None),
        }
    }

    /// Whether the tile at `position` in plan order is this shard's.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn shards_parse_and_refuse_what_does_not_exist() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["5/4", "4/4", "0/0", "1", "a/b", "-1/4", ""] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn schedulers_set_the_shard() {
        assert_eq!(Shard::from_env(None, env(&[])).unwrap(), None);
        let k8s = env(&[("JOB_COMPLETION_INDEX", "3")]);
        assert_eq!(Shard::from_env(Some(4), &k8s).unwrap(), Some(Shard { index: 3, count: 4 }));
        assert!(Shard::from_env(None, &k8s).unwrap_err().to_string().contains("--shards"));
        assert!(Shard::from_env(Some(3), &k8s).is_err(), "index 3 of 3 shards");
        let slurm =
            env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "1"), ("SLURM_ARRAY_TASK_COUNT", "8")]);
        assert_eq!(Shard::from_env(None, slurm).unwrap(), Some(Shard { index: 4, count: 8 }));
        assert!(Shard::from_env(Some(2), env(&[])).is_err(), "--shards without a scheduler");
        assert!(Shard::from_env(Some(2), env(&[("JOB_COMPLETION_INDEX", "x")])).is_err());
    }

    #[test]
    fn shards_partition_the_tiles() {
        let n = 5;
        for pos in 0..23 {
            let owners = (0..n).filter(|&k| Shard { index: k, count: n }.owns(pos)).count();
            assert_eq!(owners, 1, "tile {pos}");
        }
    }
}
