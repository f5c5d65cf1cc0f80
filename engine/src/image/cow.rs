//! The rule for pages a child shares with its parent copy-on-write, which dump and restore
//! agree on: a private mapping a fork gives the child as its parent has it (same range, kind,
//! protection, and file and offset). In such a mapping the dump may record a child's page as
//! its parent's (`PagemapEntry.in_parent`: the same physical page at the same address, no
//! data in the child's pages image), and the restore gives the child its parent's mapping by
//! fork, or copies the page from its parent once the parent's memory is built.

use super::schema::{Vma, VmaKind};

/// Whether a fork gives the child mapping `a` as the parent's mapping `b` is.
pub fn same_private(a: &Vma, b: &Vma) -> bool {
    let kind = |v: &Vma| VmaKind::try_from(v.kind).unwrap_or(VmaKind::Unspecified);
    let files = match (kind(a), kind(b)) {
        (VmaKind::AnonPrivate, VmaKind::AnonPrivate) => true,
        (VmaKind::FilePrivate, VmaKind::FilePrivate) => {
            a.path == b.path && a.pgoff == b.pgoff && a.deleted_file == b.deleted_file
        }
        _ => false,
    };
    files && (a.start, a.end, a.prot, a.growsdown) == (b.start, b.end, b.prot, b.growsdown)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A one-page mapping at `start`, for tests of the rule and of what follows it.
    pub(crate) fn vma(start: u64, kind: VmaKind, prot: u32, path: &str) -> Vma {
        Vma {
            start,
            end: start + 0x1000,
            prot,
            kind: kind as i32,
            path: path.into(),
            ..Vma::default()
        }
    }

    #[test]
    fn only_private_mappings_alike_in_all_a_fork_keeps_are_the_same() {
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        let anon = vma(0x1000, VmaKind::AnonPrivate, rw, "");
        let file = vma(0x1000, VmaKind::FilePrivate, rw, "/lib/a.so");
        assert!(same_private(&anon, &anon));
        assert!(same_private(&file, &file));
        assert!(!same_private(&anon, &file));
        let shared = vma(0x1000, VmaKind::AnonShared, rw, "");
        assert!(!same_private(&shared, &shared));
        assert!(!same_private(
            &anon,
            &vma(0x1000, VmaKind::AnonPrivate, libc::PROT_READ as u32, "")
        ));
        assert!(!same_private(
            &anon,
            &vma(0x2000, VmaKind::AnonPrivate, rw, "")
        ));
        assert!(!same_private(
            &file,
            &vma(0x1000, VmaKind::FilePrivate, rw, "/lib/b.so")
        ));
        let moved = Vma {
            pgoff: 0x1000,
            ..file.clone()
        };
        assert!(!same_private(&file, &moved));
    }
}
