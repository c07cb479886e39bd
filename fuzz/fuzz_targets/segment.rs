//! The agent-segment reader on arbitrary segment files: opening and believing one
//! (`Segment::open`), then every read `looptop` makes of it (slots, stall rings, agent and probe
//! records, watchdog samples), from an arbitrary position, as a reader that followed an earlier
//! state of the file would.
//!
//! The input describes a file, since a real segment is half a megabyte or more:
//! - byte 0: bit 0 keeps the header's layout fields valid (so that the fuzzer reaches the
//!   rings), bits 1–7 choose how many slots the file backs (and so its length), byte 1 cuts it
//!   short by up to 255 bytes;
//! - 8 bytes: the position the ring reads start from;
//! - the header's bytes (zero-extended);
//! - patches to the rest of the file, each `[offset u32][length u8][bytes]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use looptop::source::segment::{Owner, Segment};
use looptop_abi as abi;
use std::mem::{offset_of, size_of};
use std::os::unix::fs::FileExt;

fuzz_target!(|data: &[u8]| {
    let Some((&[mode, cut], rest)) = data.split_first_chunk::<2>() else { return };
    let Some((from, rest)) = rest.split_first_chunk::<8>() else { return };
    let from = u64::from_le_bytes(*from);
    let hsize = size_of::<abi::Header>();
    let mut header = vec![0u8; hsize];
    let n = rest.len().min(hsize);
    header[..n].copy_from_slice(&rest[..n]);
    let mut patches = &rest[n..];
    if mode & 1 == 1 {
        keep_layout(&mut header);
    }
    let slots = (mode >> 1) as usize % (abi::LOOP_SLOTS + 1);
    let len = (abi::backed_len(slots.max(1)) as u64).saturating_sub(cut as u64).max(hsize as u64 / 2);
    let pid = u32::from_ne_bytes(header[offset_of!(abi::Header, pid)..][..4].try_into().unwrap());
    // A segment's name may end in `-<hex>`: this fuzzer's pid, so that fuzzers side by side
    // (-jobs) never share a file.
    let path = dir().join(format!("{}{pid}-{:x}", abi::SEGMENT_PREFIX, std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(len).unwrap();
    file.write_all_at(&header[..hsize.min(len as usize)], 0).unwrap();
    while let Some((head, tail)) = patches.split_first_chunk::<5>() {
        let off = u32::from_le_bytes(head[..4].try_into().unwrap()) as u64 % len;
        let bytes = &tail[..(head[4] as usize).min(tail.len())];
        let bytes = &bytes[..bytes.len().min((len - off) as usize)];
        file.write_all_at(bytes, off).unwrap();
        patches = &tail[bytes.len().max(1).min(tail.len())..];
    }
    drop(file);
    if let Ok(mut seg) = Segment::open(&path, Owner::Named) {
        read_everything(&mut seg, from);
    }
    let _ = std::fs::remove_file(&path);
});

/// Every read looptop's agent source makes, from `from` (0 for a reader that starts now).
fn read_everything(seg: &mut Segment, from: u64) {
    let _ = seg.exe();
    if let Ok(snaps) = seg.snapshots() {
        for (i, s) in snaps {
            let _ = seg.stalls(i, from, s.stall_count);
        }
    }
    let _ = seg.events(from);
    let _ = seg.samples(from);
    for ch in 0..seg.probe_channels() {
        let _ = seg.probe_records(ch, from);
    }
    let _ = seg.refresh();
}

/// Writes the layout fields a real agent writes, so that the input's other bytes are read.
fn keep_layout(h: &mut [u8]) {
    let mut put = |off: usize, bytes: &[u8]| h[off..off + bytes.len()].copy_from_slice(bytes);
    put(offset_of!(abi::Header, magic), &abi::MAGIC);
    put(offset_of!(abi::Header, version), &abi::LAYOUT_VERSION.to_ne_bytes());
    put(offset_of!(abi::Header, header_size), &(size_of::<abi::Header>() as u32).to_ne_bytes());
    put(offset_of!(abi::Header, slot_size), &(abi::SLOT_SIZE as u32).to_ne_bytes());
    put(offset_of!(abi::Header, loop_slots), &(abi::LOOP_SLOTS as u32).to_ne_bytes());
    put(offset_of!(abi::Header, slot_offset), &(abi::SLOT_OFFSET as u64).to_ne_bytes());
    put(offset_of!(abi::Header, event_offset), &(abi::EVENT_OFFSET as u64).to_ne_bytes());
    put(offset_of!(abi::Header, probe_offset), &(abi::PROBE_OFFSET as u64).to_ne_bytes());
    put(offset_of!(abi::Header, sample_offset), &(abi::SAMPLE_OFFSET as u64).to_ne_bytes());
    put(offset_of!(abi::Header, probe_channels), &(abi::PROBE_CHANNELS as u32).to_ne_bytes());
    put(offset_of!(abi::Header, probe_ring), &(abi::PROBE_RING as u32).to_ne_bytes());
    put(offset_of!(abi::Header, sample_ring), &(abi::SAMPLE_RING as u32).to_ne_bytes());
    put(offset_of!(abi::Header, sample_size), &(abi::SAMPLE_SIZE as u32).to_ne_bytes());
    put(offset_of!(abi::Header, record_size), &(abi::RECORD_SIZE as u32).to_ne_bytes());
}

/// The folder for the files: tmpfs when there is one. It holds at most one file per fuzzer, for
/// the length of one input.
fn dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm".into() } else { std::env::temp_dir() };
        let d = base.join("looptop-fuzz-segment");
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}
