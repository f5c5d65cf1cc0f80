//! The rule for shared anonymous memory that dump and restore agree on: a restore creates
//! each shared memory object once, at one address range, and every process of the tree
//! inherits it there, so every mapping of one object must have the same range.

use super::schema::{Vma, VmaKind};

/// Two mappings of one shared memory object at different ranges: the process index (in the
/// order given) and the mapping of each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShmemMismatch<'a> {
    /// The object's identity (its inode number).
    pub shmem_id: u64,
    pub first: (usize, &'a Vma),
    pub second: (usize, &'a Vma),
}

/// The first shared memory object of `all` (each process's mappings) mapped at two different
/// ranges, if any.
pub fn shmem_mismatch<'a>(all: &[&'a [Vma]]) -> Option<ShmemMismatch<'a>> {
    let mut seen: Vec<(usize, &'a Vma)> = Vec::new();
    for (proc_idx, vmas) in all.iter().enumerate() {
        for v in vmas
            .iter()
            .filter(|v| VmaKind::try_from(v.kind) == Ok(VmaKind::AnonShared))
        {
            match seen.iter().find(|(_, s)| s.shmem_id == v.shmem_id) {
                Some(&(first_idx, s)) => {
                    if (s.start, s.end) != (v.start, v.end) {
                        return Some(ShmemMismatch {
                            shmem_id: v.shmem_id,
                            first: (first_idx, s),
                            second: (proc_idx, v),
                        });
                    }
                }
                None => seen.push((proc_idx, v)),
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shm(id: u64, start: u64, end: u64) -> Vma {
        Vma {
            start,
            end,
            kind: VmaKind::AnonShared as i32,
            shmem_id: id,
            ..Vma::default()
        }
    }

    #[test]
    fn same_range_everywhere_is_fine_another_is_not() {
        let a = [shm(7, 0x1000, 0x3000), shm(8, 0x5000, 0x6000)];
        let b = [shm(7, 0x1000, 0x3000)];
        assert!(shmem_mismatch(&[&a, &b]).is_none());
        let c = [shm(7, 0x9000, 0xb000)];
        let m = shmem_mismatch(&[&a, &b, &c]).unwrap();
        assert_eq!(m.shmem_id, 7);
        assert_eq!((m.first.0, m.second.0), (0, 2));
        assert_eq!(m.second.1.start, 0x9000);
    }
}
