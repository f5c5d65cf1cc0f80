//! The image file layer against the documented format: round trips, and damaged or hostile
//! images that must give the exact error, naming the file, never a panic.
//!
//! The helpers below re-implement the framing from `engine/proto/README.md` on purpose, so the
//! tests check the documented format and not only that the writer and reader agree.

use std::fs;
use std::path::{Path, PathBuf};

use crlab::image::schema::{
    file_entry, Credentials, Fd, FileEntry, FileTable, GpRegs, ImageFileEntry, Inventory, Mm,
    MmFields, PagemapEntry, PathFile, PathFileType, Pipe, PipeEnd, ProcessEntry, ProcessState,
    PsTree, Rlimit, Rseq, SigAction, SigAltStack, SigInfo, Task, ThreadCore, Vma, VmaKind,
};
use crlab::image::{
    core_name, mm_name, pages_name, show, task_name, FileKind, ImageDirReader, ImageDirWriter,
    ImageError, FILES, FORMAT_VERSION, INVENTORY, MAX_MESSAGE_LEN, PSTREE,
};
use prost::Message;
use rstest::rstest;
use xxhash_rust::xxh3::xxh3_64;

const PID: u32 = 100;
const THREAD: u32 = 101;
const HEADER_LEN: usize = 16;

// ---------------------------------------------------------------- synthetic messages

fn sample_inventory() -> Inventory {
    Inventory {
        format_version: 0,
        engine_version: "0.1.0-test".into(),
        root_pid: PID,
        kernel_release: "6.1.0-test".into(),
        selinux_enabled: true,
        created_unix_ms: 1_700_000_000_000,
        page_size: 4096,
        files: Vec::new(),
    }
}

fn sample_pstree() -> PsTree {
    PsTree {
        processes: vec![
            ProcessEntry {
                pid: PID,
                ppid: 0,
                pgid: PID,
                sid: PID,
                threads: vec![PID, THREAD],
                state: ProcessState::Alive as i32,
                exit_status: 0,
                stop_signal: 0,
            },
            ProcessEntry {
                pid: 102,
                ppid: PID,
                pgid: PID,
                sid: PID,
                threads: vec![102],
                state: ProcessState::Zombie as i32,
                exit_status: 256,
                stop_signal: 0,
            },
        ],
    }
}

fn sample_files() -> FileTable {
    FileTable {
        files: vec![
            FileEntry {
                id: 1,
                flags: libc::O_RDONLY as u32,
                kind: Some(file_entry::Kind::Path(PathFile {
                    path: "/dev/null".into(),
                    pos: 0,
                    r#type: PathFileType::CharDevice as i32,
                })),
            },
            FileEntry {
                id: 2,
                flags: libc::O_WRONLY as u32,
                kind: Some(file_entry::Kind::Pipe(PipeEnd { pipe_id: 4242 })),
            },
            FileEntry {
                id: 3,
                flags: (libc::O_WRONLY | libc::O_APPEND) as u32,
                kind: Some(file_entry::Kind::Path(PathFile {
                    path: "/var/log/workload.log".into(),
                    pos: 17,
                    r#type: PathFileType::Regular as i32,
                })),
            },
        ],
        pipes: vec![Pipe {
            id: 4242,
            data: b"queued bytes".to_vec(),
            capacity: 65536,
        }],
    }
}

fn sample_task() -> Task {
    let mut raw = vec![0u8; 128];
    raw[0] = 10; // si_signo
    Task {
        pid: PID,
        creds: Some(Credentials {
            uid: 1000,
            euid: 1000,
            suid: 1000,
            fsuid: 1000,
            gid: 1000,
            egid: 1000,
            sgid: 1000,
            fsgid: 1000,
            groups: vec![10, 100],
        }),
        cwd: "/home/user".into(),
        umask: 0o022,
        rlimits: vec![Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        }],
        sigactions: vec![SigAction {
            signo: 15,
            handler: 0x40_1000,
            flags: 0x0400_0000,
            restorer: 0x40_1100,
            mask: 1 << 9,
        }],
        fds: vec![
            Fd {
                fd: 0,
                file_id: 1,
                cloexec: false,
            },
            Fd {
                fd: 1,
                file_id: 2,
                cloexec: false,
            },
            Fd {
                fd: 3,
                file_id: 3,
                cloexec: true,
            },
        ],
        shared_pending: vec![SigInfo { signo: 10, raw }],
        personality: 0,
        dumpable: Some(1),
        ..Task::default()
    }
}

fn sample_mm() -> Mm {
    let vma = |start: u64, end: u64, prot: i32, kind: VmaKind, path: &str| Vma {
        start,
        end,
        prot: u32::try_from(prot).expect("protection bits are not negative"),
        kind: kind as i32,
        path: path.into(),
        pgoff: 0,
        growsdown: false,
        shmem_id: 0,
        ..Vma::default()
    };
    let (r, w, x) = (libc::PROT_READ, libc::PROT_WRITE, libc::PROT_EXEC);
    Mm {
        vmas: vec![
            vma(
                0x40_0000,
                0x40_2000,
                r | x,
                VmaKind::FilePrivate,
                "/usr/bin/workload",
            ),
            vma(0x60_0000, 0x60_2000, r | w, VmaKind::AnonPrivate, "[heap]"),
            Vma {
                growsdown: true,
                ..vma(
                    0x7ffd_0000_0000,
                    0x7ffd_0002_1000,
                    r | w,
                    VmaKind::AnonPrivate,
                    "[stack]",
                )
            },
            vma(
                0x7ffd_0010_0000,
                0x7ffd_0010_4000,
                r,
                VmaKind::Vvar,
                "[vvar]",
            ),
            vma(
                0x7ffd_0010_4000,
                0x7ffd_0010_6000,
                r | x,
                VmaKind::Vdso,
                "[vdso]",
            ),
        ],
        fields: Some(MmFields {
            start_code: 0x40_0000,
            end_code: 0x40_2000,
            start_data: 0x60_0000,
            end_data: 0x60_0000,
            start_brk: 0x60_0000,
            brk: 0x60_2000,
            start_stack: 0x7ffd_0002_0000,
            arg_start: 0x7ffd_0002_0100,
            arg_end: 0x7ffd_0002_0120,
            env_start: 0x7ffd_0002_0120,
            env_end: 0x7ffd_0002_0200,
        }),
        auxv: vec![6, 4096, 33, 0x7ffd_0010_4000, 0, 0],
        exe_path: "/usr/bin/workload".into(),
        pagemap: vec![
            PagemapEntry {
                vaddr: 0x60_0000,
                nr_pages: 2,
                in_parent: false,
            },
            PagemapEntry {
                vaddr: 0x7ffd_0002_0000,
                nr_pages: 1,
                in_parent: false,
            },
        ],
    }
}

fn sample_core(tid: u32) -> ThreadCore {
    ThreadCore {
        tid,
        regs: Some(GpRegs {
            rax: u64::from_ne_bytes(i64::from(-libc::EINTR).to_ne_bytes()),
            orig_rax: 230,
            rip: 0x40_1234,
            rsp: 0x7ffd_0002_0f00,
            rbp: 0x7ffd_0002_0f40,
            cs: 0x33,
            ss: 0x2b,
            eflags: 0x246,
            fs_base: 0x7f00_0000_0740,
            ..GpRegs::default()
        }),
        xstate: (0..32u8).collect(),
        sigmask: 1 << 13,
        altstack: Some(SigAltStack {
            sp: 0x7f00_0001_0000,
            flags: 0,
            size: 8192,
        }),
        clear_child_tid: 0x7f00_0000_0a10,
        robust_list: 0x7f00_0000_0a20,
        robust_list_len: 24,
        rseq: Some(Rseq {
            abi_pointer: 0x7f00_0000_0be0,
            abi_size: 32,
            flags: 0,
            signature: 0x5305_3053,
        }),
        selinux_context: "system_u:system_r:container_t:s0:c1,c2".into(),
        sockcreate_context: String::new(),
        pending: Vec::new(),
        comm: format!("worker-{tid}"),
        ..ThreadCore::default()
    }
}

fn sample_pages() -> Vec<u8> {
    (0..3 * 4096u32).map(|i| (i % 251) as u8).collect()
}

// ---------------------------------------------------------------- a dump on disk

/// A complete dump of one process with two threads, in a temporary directory.
struct Dump {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Dump {
    fn new() -> Dump {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("images");
        let mut w = ImageDirWriter::create(&dir).expect("create");
        w.write_message(PSTREE, FileKind::PsTree, &sample_pstree())
            .expect("pstree");
        w.write_message(FILES, FileKind::Files, &sample_files())
            .expect("files");
        w.write_message(&task_name(PID), FileKind::Task, &sample_task())
            .expect("task");
        w.write_message(&mm_name(PID), FileKind::Mm, &sample_mm())
            .expect("mm");
        for tid in [PID, THREAD] {
            w.write_message(&core_name(tid), FileKind::Core, &sample_core(tid))
                .expect("core");
        }
        let pages = sample_pages();
        let mut pw = w.pages_writer(PID).expect("pages writer");
        pw.write_all(&pages[..4096]).expect("page 1");
        pw.write_all(&pages[4096..]).expect("pages 2-3");
        assert_eq!(pw.finish().expect("finish"), pages.len() as u64);
        w.commit(sample_inventory()).expect("commit");
        Dump { _tmp: tmp, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn read(&self, name: &str) -> Vec<u8> {
        fs::read(self.path(name)).expect("read image file")
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        fs::write(self.path(name), bytes).expect("write image file");
    }

    fn open(&self) -> Result<ImageDirReader, ImageError> {
        ImageDirReader::open(&self.dir)
    }

    /// Rewrites the inventory so it records the current size and checksum of every listed
    /// file: what a damaged file looks like when the inventory check is bypassed.
    fn reseal(&self) {
        let mut inventory = self.raw_inventory();
        for entry in &mut inventory.files {
            if let Ok(bytes) = fs::read(self.path(&entry.name)) {
                entry.size = bytes.len() as u64;
                entry.xxh3 = xxh3_64(&bytes);
            }
        }
        self.write_raw_inventory(&inventory);
    }

    /// Decodes inventory.img by the documented format, without the crate's reader.
    fn raw_inventory(&self) -> Inventory {
        let bytes = self.read(INVENTORY);
        assert_eq!(&bytes[..HEADER_LEN], &header(FORMAT_VERSION, 1));
        Inventory::decode_length_delimited(&bytes[HEADER_LEN..]).expect("inventory decodes")
    }

    fn write_raw_inventory(&self, inventory: &Inventory) {
        self.write(
            INVENTORY,
            &frame(FORMAT_VERSION, 1, &inventory.encode_to_vec()),
        );
    }
}

fn header(version: u32, kind: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(b"CRLAB\0\0\0");
    h[8..12].copy_from_slice(&version.to_le_bytes());
    h[12..].copy_from_slice(&kind.to_le_bytes());
    h
}

fn frame(version: u32, kind: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = header(version, kind).to_vec();
    prost::encode_length_delimiter(body.len(), &mut bytes).expect("vec grows");
    bytes.extend_from_slice(body);
    bytes
}

/// The length of the varint length prefix of a message file.
fn prefix_len(file: &[u8]) -> usize {
    file[HEADER_LEN..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("prefix ends")
        + 1
}

/// Reads `name` as the message type its kind stands for.
fn read_as(reader: &ImageDirReader, name: &str, kind: FileKind) -> Result<(), ImageError> {
    match kind {
        FileKind::Inventory => reader.read_message::<Inventory>(name, kind).map(drop),
        FileKind::PsTree => reader.read_message::<PsTree>(name, kind).map(drop),
        FileKind::Files => reader.read_message::<FileTable>(name, kind).map(drop),
        FileKind::Task => reader.read_message::<Task>(name, kind).map(drop),
        FileKind::Mm => reader.read_message::<Mm>(name, kind).map(drop),
        FileKind::Core => reader.read_message::<ThreadCore>(name, kind).map(drop),
        FileKind::Pages => panic!("pages files hold no message"),
    }
}

fn variant(err: &ImageError) -> &'static str {
    match err {
        ImageError::Io { .. } => "Io",
        ImageError::Incomplete { .. } => "Incomplete",
        ImageError::BadMagic { .. } => "BadMagic",
        ImageError::UnsupportedVersion { .. } => "UnsupportedVersion",
        ImageError::WrongKind { .. } => "WrongKind",
        ImageError::Truncated { .. } => "Truncated",
        ImageError::TooLarge { .. } => "TooLarge",
        ImageError::TrailingData { .. } => "TrailingData",
        ImageError::Decode { .. } => "Decode",
        ImageError::Encode { .. } => "Encode",
        ImageError::Checksum { .. } => "Checksum",
        ImageError::SizeMismatch { .. } => "SizeMismatch",
        ImageError::Missing { .. } => "Missing",
        ImageError::NotListed { .. } => "NotListed",
        ImageError::BadFileName { .. } => "BadFileName",
        ImageError::DuplicateFile { .. } => "DuplicateFile",
        ImageError::NotRegularFile { .. } => "NotRegularFile",
        ImageError::PartialPage { .. } => "PartialPage",
        ImageError::Json { .. } => "Json",
        ImageError::ProcessTree { .. } => "ProcessTree",
    }
}

/// The error is the expected variant, and both its message and `path()` name the file.
#[track_caller]
fn assert_error(err: &ImageError, expected: &str, path: &Path) {
    assert_eq!(variant(err), expected, "{err}");
    assert_eq!(err.path(), path, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "{text:?} does not name {}",
        path.display()
    );
    assert_eq!(text, text.trim_end_matches('.'), "trailing period");
}

const MESSAGE_FILES: [(&str, FileKind); 6] = [
    (PSTREE, FileKind::PsTree),
    (FILES, FileKind::Files),
    ("task-100.img", FileKind::Task),
    ("mm-100.img", FileKind::Mm),
    ("core-100.img", FileKind::Core),
    ("core-101.img", FileKind::Core),
];

// ---------------------------------------------------------------- round trips

#[test]
fn every_message_kind_round_trips() {
    let dump = Dump::new();
    let reader = dump.open().expect("open");
    assert_eq!(reader.dir(), dump.dir);

    let inventory = reader.inventory();
    assert_eq!(inventory.format_version, FORMAT_VERSION);
    assert_eq!(
        Inventory {
            format_version: 0,
            files: Vec::new(),
            ..inventory.clone()
        },
        sample_inventory()
    );
    let names: Vec<_> = inventory.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            PSTREE,
            FILES,
            "task-100.img",
            "mm-100.img",
            "core-100.img",
            "core-101.img",
            "pages-100.img"
        ]
    );
    for entry in &inventory.files {
        let bytes = dump.read(&entry.name);
        assert_eq!(entry.size, bytes.len() as u64, "{}", entry.name);
        assert_eq!(entry.xxh3, xxh3_64(&bytes), "{}", entry.name);
    }

    assert_eq!(
        reader
            .read_message::<PsTree>(PSTREE, FileKind::PsTree)
            .expect("pstree"),
        sample_pstree()
    );
    assert_eq!(
        reader
            .read_message::<FileTable>(FILES, FileKind::Files)
            .expect("files"),
        sample_files()
    );
    assert_eq!(
        reader
            .read_message::<Task>(&task_name(PID), FileKind::Task)
            .expect("task"),
        sample_task()
    );
    assert_eq!(
        reader
            .read_message::<Mm>(&mm_name(PID), FileKind::Mm)
            .expect("mm"),
        sample_mm()
    );
    for tid in [PID, THREAD] {
        assert_eq!(
            reader
                .read_message::<ThreadCore>(&core_name(tid), FileKind::Core)
                .expect("core"),
            sample_core(tid)
        );
    }
    let again: Inventory = reader
        .read_message(INVENTORY, FileKind::Inventory)
        .expect("inventory");
    assert_eq!(&again, inventory);
}

#[test]
fn the_files_follow_the_documented_framing() {
    let dump = Dump::new();
    let pstree = dump.read(PSTREE);
    assert_eq!(
        pstree,
        frame(FORMAT_VERSION, 2, &sample_pstree().encode_to_vec())
    );
    let mm = dump.read(&mm_name(PID));
    assert_eq!(mm, frame(FORMAT_VERSION, 5, &sample_mm().encode_to_vec()));
    assert!(
        prefix_len(&mm) > 1,
        "the mm sample should need a multi-byte prefix"
    );
    let pages = dump.read(&pages_name(PID));
    assert_eq!(&pages[..HEADER_LEN], &header(FORMAT_VERSION, 6));
    assert_eq!(&pages[HEADER_LEN..], sample_pages().as_slice());
}

#[test]
fn pages_round_trip_in_any_chunking() {
    let dump = Dump::new();
    let reader = dump.open().expect("open");
    let expected = sample_pages();

    let mut pages = reader.pages(PID).expect("pages");
    assert_eq!(pages.len(), expected.len() as u64);
    assert!(!pages.is_empty());
    let mut got = vec![0u8; expected.len()];
    let (first, rest) = got.split_at_mut(8192);
    pages.read_exact(first).expect("first two pages");
    pages.read_exact(rest).expect("last page");
    assert_eq!(got, expected);
    pages.finish().expect("checksum matches");

    let mut pages = reader.pages(PID).expect("pages again");
    for chunk in got.chunks_mut(100) {
        pages.read_exact(chunk).expect("small reads");
    }
    assert_eq!(got, expected);
    pages.finish().expect("checksum matches again");
}

#[test]
fn large_and_empty_pages_files_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = ImageDirWriter::create(tmp.path()).expect("create");
    let chunk: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7).to_le_bytes()[0]).collect();
    let mut pw = w.pages_writer(1).expect("pages 1");
    for _ in 0..8 {
        pw.write_all(&chunk).expect("1 MiB");
    }
    assert_eq!(pw.finish().expect("finish"), 8 << 20);
    let pw = w.pages_writer(2).expect("pages 2");
    assert_eq!(pw.finish().expect("finish empty"), 0);
    w.commit(Inventory::default()).expect("commit");

    let reader = ImageDirReader::open(tmp.path()).expect("open");
    let mut pages = reader.pages(1).expect("pages 1");
    assert_eq!(pages.len(), 8 << 20);
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..8 {
        pages.read_exact(&mut buf).expect("read 1 MiB");
        assert_eq!(buf, chunk);
    }
    pages.finish().expect("checksum");
    let empty = reader.pages(2).expect("pages 2");
    assert!(empty.is_empty());
    empty.finish().expect("empty checksum");
}

#[test]
fn show_renders_a_small_dump_as_json() {
    let dump = Dump::new();
    let value = show(&dump.dir).expect("show");
    insta::assert_json_snapshot!("show_small_dump", value, {
        r#"["inventory.img"].createdUnixMs"# => "[created_unix_ms]",
        r#"["inventory.img"].files[].xxh3"# => "[xxh3]",
    });
}

#[test]
fn show_refuses_a_damaged_dump() {
    let dump = Dump::new();
    let mut bytes = dump.read(FILES);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    dump.write(FILES, &bytes);
    let err = show(&dump.dir).expect_err("damaged");
    assert_error(&err, "Checksum", &dump.path(FILES));
}

// ---------------------------------------------------------------- truncation

/// Every cut of a message file: with the inventory intact the size is wrong; with the
/// inventory resealed the framing says where the file ends too early.
#[rstest]
#[case::pstree(PSTREE, FileKind::PsTree)]
#[case::files(FILES, FileKind::Files)]
#[case::task("task-100.img", FileKind::Task)]
#[case::mm("mm-100.img", FileKind::Mm)]
#[case::core("core-101.img", FileKind::Core)]
fn truncated_message_files(#[case] name: &str, #[case] kind: FileKind) {
    let dump = Dump::new();
    let path = dump.path(name);
    let original = dump.read(name);
    let message_start = HEADER_LEN + prefix_len(&original);
    // Every header byte and both framing boundaries, then offsets inside the message: all of
    // them for small messages, a sample (including the last byte) for large ones.
    let step = (original.len() / 64).max(1);
    let cuts: std::collections::BTreeSet<usize> = (0..=message_start)
        .chain((message_start + 1..original.len()).step_by(step))
        .chain([original.len() - 1])
        .collect();
    for cut in cuts {
        dump.write(name, &original);
        dump.reseal();
        dump.write(name, &original[..cut]);
        let err = dump.open().expect_err("size differs from the inventory");
        assert_error(&err, "SizeMismatch", &path);

        dump.reseal();
        let reader = dump.open().expect("resealed dump opens");
        let err = read_as(&reader, name, kind).expect_err("truncated");
        assert_error(&err, "Truncated", &path);
        let ImageError::Truncated { what, .. } = err else {
            unreachable!()
        };
        let expected = match cut {
            c if c < HEADER_LEN => "header",
            c if c < message_start => "length prefix",
            _ => "message",
        };
        assert_eq!(what, expected, "cut at {cut}");
    }
}

#[test]
fn truncated_inventory() {
    let dump = Dump::new();
    let path = dump.path(INVENTORY);
    let original = dump.read(INVENTORY);
    let message_start = HEADER_LEN + prefix_len(&original);
    for cut in 0..original.len() {
        dump.write(INVENTORY, &original[..cut]);
        let err = dump.open().expect_err("truncated inventory");
        assert_error(&err, "Truncated", &path);
        let ImageError::Truncated { what, .. } = err else {
            unreachable!()
        };
        let expected = match cut {
            c if c < HEADER_LEN => "header",
            c if c < message_start => "length prefix",
            _ => "message",
        };
        assert_eq!(what, expected, "cut at {cut}");
    }
}

#[test]
fn truncated_pages_file() {
    let dump = Dump::new();
    let name = pages_name(PID);
    let path = dump.path(&name);
    let original = dump.read(&name);
    // Cuts that leave a broken header or a partial page (whole pages are checked below).
    for cut in [0, 7, 15, 17, 4096 + 15, 4096 + 17, original.len() - 1] {
        dump.write(&name, &original);
        dump.reseal();
        dump.write(&name, &original[..cut]);
        let err = dump.open().expect_err("size differs");
        assert_error(&err, "SizeMismatch", &path);
        dump.reseal();
        let reader = dump.open().expect("resealed");
        let err = reader.pages(PID).expect_err("truncated pages");
        let expected = if cut < HEADER_LEN {
            "Truncated"
        } else {
            "PartialPage"
        };
        assert_error(&err, expected, &path);
    }
    // Whole pages missing: the file is consistent, but shorter than the reader asks for.
    dump.write(&name, &original[..HEADER_LEN + 4096]);
    dump.reseal();
    let reader = dump.open().expect("resealed");
    let mut pages = reader.pages(PID).expect("one page");
    let mut buf = vec![0u8; 8192];
    let err = pages.read_exact(&mut buf).expect_err("asks for two");
    assert_error(&err, "Truncated", &path);
}

// ---------------------------------------------------------------- flipped bytes

#[test]
fn any_flipped_byte_of_a_message_file_fails_its_checksum() {
    let dump = Dump::new();
    for (name, _) in MESSAGE_FILES {
        let path = dump.path(name);
        let original = dump.read(name);
        for offset in 0..original.len() {
            let mut bytes = original.clone();
            bytes[offset] ^= 0x01;
            dump.write(name, &bytes);
            let err = dump.open().expect_err("flipped byte");
            assert_error(&err, "Checksum", &path);
        }
        dump.write(name, &original);
    }
    dump.open().expect("restored dump opens again");
}

#[derive(Debug, Clone, Copy)]
enum Spot {
    Magic,
    Version,
    Kind,
    /// The first byte of the message: a field tag, whose wire type the flip makes invalid.
    FirstTag,
}

/// With the checksum rewritten, the same damage reaches the framing and decoding checks.
#[rstest]
#[case::magic(Spot::Magic, 0x01, "BadMagic")]
#[case::version(Spot::Version, 0x02, "UnsupportedVersion")]
#[case::kind(Spot::Kind, 0x08, "WrongKind")]
#[case::first_tag(Spot::FirstTag, 0x07, "Decode")]
fn flipped_bytes_past_a_resealed_inventory(
    #[case] spot: Spot,
    #[case] mask: u8,
    #[case] expected: &str,
    #[values(0, 1, 2, 3, 4, 5)] file: usize,
) {
    let (name, kind) = MESSAGE_FILES[file];
    let dump = Dump::new();
    let path = dump.path(name);
    let mut bytes = dump.read(name);
    let offset = match spot {
        Spot::Magic => 0,
        Spot::Version => 8,
        Spot::Kind => 12,
        Spot::FirstTag => HEADER_LEN + prefix_len(&bytes),
    };
    bytes[offset] ^= mask;
    dump.write(name, &bytes);
    assert_error(&dump.open().expect_err("checksum"), "Checksum", &path);

    dump.reseal();
    let reader = dump.open().expect("resealed");
    let err = read_as(&reader, name, kind).expect_err("damaged");
    assert_error(&err, expected, &path);
    if let ImageError::UnsupportedVersion {
        found, supported, ..
    } = err
    {
        assert_eq!(
            (found, supported),
            (FORMAT_VERSION ^ u32::from(mask), FORMAT_VERSION)
        );
    }
}

#[test]
fn a_flipped_page_byte_fails_the_checksum_at_finish() {
    let dump = Dump::new();
    let name = pages_name(PID);
    let mut bytes = dump.read(&name);
    bytes[HEADER_LEN + 5000] ^= 0x40;
    dump.write(&name, &bytes);

    // Pages are not hashed at open (they can be GiBs): the size still matches.
    let reader = dump.open().expect("open checks the size only");
    let mut pages = reader.pages(PID).expect("pages");
    let mut buf = vec![0u8; usize::try_from(pages.len()).expect("a test dump fits in memory")];
    pages.read_exact(&mut buf).expect("read");
    let err = pages.finish().expect_err("checksum");
    assert_error(&err, "Checksum", &dump.path(&name));
}

#[test]
fn pages_read_in_place_match_and_mix_with_copied_reads() {
    let dump = Dump::new();
    let reader = dump.open().expect("open");
    let expected = sample_pages();
    let mut pages = reader.pages(PID).expect("pages");
    let mut got = pages
        .next_chunk(5000)
        .expect("first chunk, mapped")
        .to_vec();
    let mut middle = vec![0u8; 3000];
    pages
        .read_exact(&mut middle)
        .expect("copied read after a mapped one");
    got.extend_from_slice(&middle);
    let rest = expected.len() - got.len();
    got.extend_from_slice(pages.next_chunk(rest).expect("the rest, mapped"));
    assert_eq!(got, expected);
    let err = pages.next_chunk(1).expect_err("past the end");
    assert_error(&err, "Truncated", &dump.path(&pages_name(PID)));
    pages.finish().expect("checksum matches");
}

#[test]
fn a_flipped_page_byte_read_in_place_fails_the_checksum_at_finish() {
    let dump = Dump::new();
    let name = pages_name(PID);
    let mut bytes = dump.read(&name);
    bytes[HEADER_LEN + 9000] ^= 0x01;
    dump.write(&name, &bytes);

    let reader = dump.open().expect("open checks the size only");
    let mut pages = reader.pages(PID).expect("pages");
    let len = usize::try_from(pages.len()).expect("a test dump fits in memory");
    let got = pages.next_chunk(len).expect("mapped").to_vec();
    assert_eq!(got, bytes[HEADER_LEN..]);
    let err = pages.finish().expect_err("checksum");
    assert_error(&err, "Checksum", &dump.path(&name));
}

#[test]
fn unread_pages_are_reported_at_finish() {
    let dump = Dump::new();
    let reader = dump.open().expect("open");
    let mut pages = reader.pages(PID).expect("pages");
    let mut page = vec![0u8; 4096];
    pages.read_exact(&mut page).expect("one page");
    let err = pages.finish().expect_err("two pages left");
    assert_error(&err, "TrailingData", &dump.path(&pages_name(PID)));
    assert!(matches!(err, ImageError::TrailingData { bytes: 8192, .. }));
}

#[test]
fn a_page_header_with_a_flipped_kind_is_refused() {
    let dump = Dump::new();
    let name = pages_name(PID);
    let mut bytes = dump.read(&name);
    bytes[12] = FileKind::Mm as u8;
    dump.write(&name, &bytes);
    dump.reseal();
    let reader = dump.open().expect("resealed");
    let err = reader.pages(PID).expect_err("wrong kind");
    assert_error(&err, "WrongKind", &dump.path(&name));
}

// ---------------------------------------------------------------- hostile headers and lengths

#[rstest]
#[case::message_file(PSTREE)]
#[case::inventory(INVENTORY)]
fn wrong_magic(#[case] name: &str) {
    let dump = Dump::new();
    let mut bytes = dump.read(name);
    bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
    dump.write(name, &bytes);
    if name != INVENTORY {
        dump.reseal();
    }
    let err = dump
        .open()
        .and_then(|r| read_as(&r, name, FileKind::PsTree))
        .expect_err("bad magic");
    assert_error(&err, "BadMagic", &dump.path(name));
    assert!(err.to_string().contains("not a crlab image"), "{err}");
}

#[rstest]
#[case::message_file(PSTREE)]
#[case::inventory(INVENTORY)]
fn a_future_format_version_says_a_newer_crlab_wrote_it(#[case] name: &str) {
    let dump = Dump::new();
    let mut bytes = dump.read(name);
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    dump.write(name, &bytes);
    if name != INVENTORY {
        dump.reseal();
    }
    let err = dump
        .open()
        .and_then(|r| read_as(&r, name, FileKind::PsTree))
        .expect_err("future version");
    assert_error(&err, "UnsupportedVersion", &dump.path(name));
    assert!(
        err.to_string().contains("written by a newer crlab"),
        "{err}"
    );
}

#[test]
fn a_future_version_inside_the_inventory_is_refused_too() {
    let dump = Dump::new();
    let mut inventory = dump.raw_inventory();
    inventory.format_version = 7;
    dump.write_raw_inventory(&inventory);
    let err = dump.open().expect_err("future version");
    assert_error(&err, "UnsupportedVersion", &dump.path(INVENTORY));
    assert!(
        err.to_string().contains("written by a newer crlab"),
        "{err}"
    );
}

#[test]
fn wrong_kind() {
    let dump = Dump::new();
    let reader = dump.open().expect("open");
    let err = reader
        .read_message::<Task>(PSTREE, FileKind::Task)
        .expect_err("pstree is not a task");
    assert_error(&err, "WrongKind", &dump.path(PSTREE));
    assert!(matches!(
        err,
        ImageError::WrongKind {
            expected: FileKind::Task,
            found: 2,
            ..
        }
    ));
    assert!(
        err.to_string().contains("holds pstree data, expected task"),
        "{err}"
    );

    // A core image copied over a task image.
    let task = task_name(PID);
    dump.write(&task, &dump.read(&core_name(PID)));
    dump.reseal();
    let reader = dump.open().expect("resealed");
    let err = read_as(&reader, &task, FileKind::Task).expect_err("core in a task file");
    assert_error(&err, "WrongKind", &dump.path(&task));
}

#[rstest]
#[case::message_file(PSTREE, 2)]
#[case::inventory(INVENTORY, 1)]
fn a_length_prefix_of_2_pow_60_is_too_large(#[case] name: &str, #[case] kind: u32) {
    let dump = Dump::new();
    let mut bytes = header(FORMAT_VERSION, kind).to_vec();
    prost::encode_length_delimiter(1usize << 60, &mut bytes).expect("vec grows");
    bytes.extend_from_slice(b"a little data");
    dump.write(name, &bytes);
    if name != INVENTORY {
        dump.reseal();
    }
    // Were 2^60 bytes allocated, the test process would abort rather than fail.
    let err = dump
        .open()
        .and_then(|r| read_as(&r, name, FileKind::PsTree))
        .expect_err("too large");
    assert_error(&err, "TooLarge", &dump.path(name));
    assert!(matches!(
        err,
        ImageError::TooLarge { len, limit, .. } if len == 1 << 60 && limit == MAX_MESSAGE_LEN
    ));
}

#[rstest]
#[case::message_file(PSTREE)]
#[case::inventory(INVENTORY)]
fn an_overlong_varint_prefix_does_not_decode(#[case] name: &str) {
    let dump = Dump::new();
    let mut bytes = header(FORMAT_VERSION, if name == INVENTORY { 1 } else { 2 }).to_vec();
    bytes.extend_from_slice(&[0xff; 11]);
    dump.write(name, &bytes);
    if name != INVENTORY {
        dump.reseal();
    }
    let err = dump
        .open()
        .and_then(|r| read_as(&r, name, FileKind::PsTree))
        .expect_err("bad varint");
    assert_error(&err, "Decode", &dump.path(name));
}

#[rstest]
#[case::message_file(PSTREE)]
#[case::inventory(INVENTORY)]
fn trailing_garbage(#[case] name: &str) {
    let dump = Dump::new();
    let mut bytes = dump.read(name);
    bytes.extend_from_slice(b"garbage");
    dump.write(name, &bytes);
    if name != INVENTORY {
        let err = dump.open().expect_err("size mismatch");
        assert_error(&err, "SizeMismatch", &dump.path(name));
        dump.reseal();
    }
    let err = dump
        .open()
        .and_then(|r| read_as(&r, name, FileKind::PsTree))
        .expect_err("trailing data");
    assert_error(&err, "TrailingData", &dump.path(name));
    assert!(matches!(err, ImageError::TrailingData { bytes: 7, .. }));
}

// ---------------------------------------------------------------- the directory and inventory

#[test]
fn a_missing_inventory_means_an_incomplete_dump() {
    let dump = Dump::new();
    fs::remove_file(dump.path(INVENTORY)).expect("remove");
    let err = dump.open().expect_err("incomplete");
    assert_error(&err, "Incomplete", &dump.path(INVENTORY));
    let text = err.to_string();
    assert!(text.contains("interrupted"), "{text}");
    assert!(text.contains("not a crlab images directory"), "{text}");
    assert_error(
        &show(&dump.dir).expect_err("show"),
        "Incomplete",
        &dump.path(INVENTORY),
    );
}

#[test]
fn a_dump_is_incomplete_until_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut w = ImageDirWriter::create(tmp.path()).expect("create");
    assert_eq!(w.dir(), tmp.path());
    w.write_message(PSTREE, FileKind::PsTree, &sample_pstree())
        .expect("pstree");
    let err = ImageDirReader::open(tmp.path()).expect_err("not committed");
    assert_error(&err, "Incomplete", &tmp.path().join(INVENTORY));
    w.commit(sample_inventory()).expect("commit");
    ImageDirReader::open(tmp.path()).expect("committed");
}

#[test]
fn a_new_dump_into_an_old_directory_removes_the_stale_inventory_first() {
    let dump = Dump::new();
    let w = ImageDirWriter::create(&dump.dir).expect("create over an old dump");
    assert!(!dump.path(INVENTORY).exists());
    let err = dump.open().expect_err("interrupted redump");
    assert_error(&err, "Incomplete", &dump.path(INVENTORY));
    drop(w);
}

#[test]
fn a_listed_file_that_is_missing() {
    let dump = Dump::new();
    let name = core_name(THREAD);
    fs::remove_file(dump.path(&name)).expect("remove");
    let err = dump.open().expect_err("missing");
    assert_error(&err, "Missing", &dump.path(&name));
}

#[test]
fn a_listed_file_that_is_a_fifo_does_not_block() {
    let dump = Dump::new();
    fs::remove_file(dump.path(PSTREE)).expect("remove");
    nix::unistd::mkfifo(&dump.path(PSTREE), nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
    let err = dump.open().expect_err("fifo");
    assert_error(&err, "NotRegularFile", &dump.path(PSTREE));
}

#[test]
fn a_file_not_in_the_inventory_is_not_read() {
    let dump = Dump::new();
    let reader = dump.open().expect("open");
    let err = reader
        .read_message::<Task>(&task_name(999), FileKind::Task)
        .expect_err("not listed");
    assert_error(&err, "NotListed", &dump.path(&task_name(999)));
    let err = reader.pages(999).expect_err("not listed");
    assert_error(&err, "NotListed", &dump.path(&pages_name(999)));
    let err = reader
        .read_message::<Task>("../task-100.img", FileKind::Task)
        .expect_err("not listed");
    assert_eq!(variant(&err), "NotListed");
}

#[rstest]
#[case::parent_dir("../pstree.img")]
#[case::dot_dot("..")]
#[case::absolute("/etc/shadow")]
#[case::subdirectory("sub/pstree.img")]
#[case::empty("")]
#[case::itself("inventory.img")]
#[case::unknown("notes.txt")]
#[case::padded_pid("task-0100.img")]
fn a_bad_name_in_the_inventory(#[case] bad: &str) {
    let dump = Dump::new();
    let mut inventory = dump.raw_inventory();
    inventory.files.push(ImageFileEntry {
        name: bad.into(),
        size: 16,
        xxh3: 0,
    });
    dump.write_raw_inventory(&inventory);
    let err = dump.open().expect_err("bad name");
    assert_error(&err, "BadFileName", &dump.path(INVENTORY));
}

#[test]
fn a_name_listed_twice_in_the_inventory() {
    let dump = Dump::new();
    let mut inventory = dump.raw_inventory();
    let first = inventory.files[0].clone();
    inventory.files.push(first);
    dump.write_raw_inventory(&inventory);
    let err = dump.open().expect_err("duplicate");
    assert_error(&err, "DuplicateFile", &dump.path(INVENTORY));
}

#[test]
fn the_inventory_message_itself_must_decode() {
    let dump = Dump::new();
    // Field 8 (files) with wire type 7.
    dump.write(INVENTORY, &frame(FORMAT_VERSION, 1, &[0x47, 0x00]));
    let err = dump.open().expect_err("garbage inventory");
    assert_error(&err, "Decode", &dump.path(INVENTORY));
}

// ---------------------------------------------------------------- the writer refuses misuse

#[test]
fn the_writer_refuses_misuse() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut w = ImageDirWriter::create(dir).expect("create");
    w.write_message(PSTREE, FileKind::PsTree, &sample_pstree())
        .expect("pstree");

    let err = w
        .write_message(PSTREE, FileKind::PsTree, &sample_pstree())
        .expect_err("twice");
    assert_error(&err, "DuplicateFile", &dir.join(PSTREE));

    let err = w
        .write_message(&task_name(1), FileKind::Mm, &sample_mm())
        .expect_err("name and kind disagree");
    assert_error(&err, "WrongKind", &dir.join(task_name(1)));

    for name in ["../escape.img", "x/task-1.img", "random.bin"] {
        let err = w
            .write_message(name, FileKind::Task, &sample_task())
            .expect_err("bad name");
        assert_error(&err, "BadFileName", dir);
    }
    let err = w
        .write_message(INVENTORY, FileKind::Inventory, &sample_inventory())
        .expect_err("commit writes the inventory");
    assert_error(&err, "BadFileName", dir);
    let err = w
        .write_message(&pages_name(1), FileKind::Pages, &sample_pstree())
        .expect_err("pages are not a message");
    assert_error(&err, "BadFileName", dir);

    let mut pw = w.pages_writer(7).expect("pages");
    pw.write_all(&[0u8; 4095]).expect("write");
    let err = pw.finish().expect_err("not whole pages");
    assert_error(&err, "PartialPage", &dir.join(pages_name(7)));

    // The unfinished pages file is not listed.
    w.commit(sample_inventory()).expect("commit");
    let reader = ImageDirReader::open(dir).expect("open");
    let names: Vec<_> = reader.inventory().files.iter().map(|f| &f.name).collect();
    assert_eq!(names, [PSTREE]);
}

#[test]
fn image_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let dump = Dump::new();
    for name in [PSTREE, INVENTORY, "pages-100.img"] {
        let mode = fs::metadata(dump.path(name))
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} is {mode:o}");
    }
}
