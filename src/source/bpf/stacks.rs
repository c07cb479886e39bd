//! Stacks from the kernel side, each sent once: the programs name a stack by a hash of its
//! frames and copy it into `new_stacks` only while it is not in `known`. Every poll looptop
//! empties `new_stacks` into its own table (hash → frames), so that a stack seen at every
//! sample costs one map lookup in the kernel and no system call here. A stack not seen for
//! [`FORGET_AFTER`] is forgotten on both sides (removed from `known`, so the kernel side sends
//! it again if it comes back), which bounds the table by what the target ran lately.

use super::batch::{self, Batch};
use super::layout::StackFrames;
use aya::maps::{HashMap as BpfHashMap, IterableMap, MapData};
use std::collections::HashMap;

/// How long a stack no sample used is kept (ns).
const FORGET_AFTER: u64 = 30_000_000_000;
/// How often forgotten stacks are looked for (ns).
const FORGET_EVERY: u64 = 10_000_000_000;
/// Stacks kept at most (the kernel side's `known` holds as many): past it the oldest go at
/// once, whatever their age.
const MOST: usize = 32_768;
/// New stacks taken per system call.
const CHUNK: usize = 64;

/// A stack's frames and when a sample last used it (ns).
struct Kept {
    ips: Vec<u64>,
    used: u64,
}

/// looptop's side of the stacks sent once.
pub(super) struct Stacks {
    new: BpfHashMap<MapData, u64, StackFrames>,
    known: BpfHashMap<MapData, u64, u8>,
    batch: Batch<u64, StackFrames>,
    kept: HashMap<u64, Kept>,
    /// Forgotten at the last look, kept one more period: a sample the kernel side counted under
    /// one of them just before it left `known` is read after that.
    leaving: HashMap<u64, Vec<u64>>,
    forgot_at: u64,
    /// The kernel side's count of stacks sent, as of the last read of `new_stacks`.
    sent: u64,
    /// Samples whose stack was not known here (forgotten too early); they count without it.
    pub unknown: u64,
}

impl Stacks {
    pub fn new(new: BpfHashMap<MapData, u64, StackFrames>, known: BpfHashMap<MapData, u64, u8>) -> Stacks {
        Stacks {
            new,
            known,
            batch: Batch::new(CHUNK, StackFrames::default()),
            kept: HashMap::new(),
            leaving: HashMap::new(),
            forgot_at: 0,
            sent: 0,
            unknown: 0,
        }
    }

    /// Takes the stacks sent since the last read (before the records and counts that name them),
    /// when the kernel side's count of them (`sent`) moved: a read walks every bucket of the map.
    pub fn read_new(&mut self, sent: u64, now: u64) {
        if sent == self.sent {
            return;
        }
        self.sent = sent;
        let kept = &mut self.kept;
        self.batch.take_all(&mut self.new, |hash, frames| {
            kept.insert(*hash, Kept { ips: frames.frames().to_vec(), used: now });
        });
        if now.saturating_sub(self.forgot_at) >= FORGET_EVERY || self.kept.len() > MOST {
            self.forget(now);
        }
    }

    /// Appends the frames of stack `hash` (0: none) to `ips`.
    pub fn extend(&mut self, hash: u64, now: u64, ips: &mut Vec<u64>) {
        if hash == 0 {
            return;
        }
        if let Some(k) = self.kept.get_mut(&hash) {
            k.used = now;
            ips.extend_from_slice(&k.ips);
        } else if let Some(frames) = self.leaving.remove(&hash) {
            ips.extend_from_slice(&frames);
            self.kept.insert(hash, Kept { ips: frames, used: now });
        } else {
            self.unknown += 1;
        }
    }

    /// Forgets the stacks no sample used for [`FORGET_AFTER`] (the oldest beyond [`MOST`]).
    fn forget(&mut self, now: u64) {
        self.forgot_at = now;
        let mut cutoff = now.saturating_sub(FORGET_AFTER);
        if self.kept.len() > MOST {
            let mut used: Vec<u64> = self.kept.values().map(|k| k.used).collect();
            let (_, nth, _) = used.select_nth_unstable(self.kept.len() - MOST / 2);
            cutoff = cutoff.max(*nth);
        }
        let old: Vec<u64> = self.kept.iter().filter(|(_, k)| k.used < cutoff).map(|(&h, _)| h).collect();
        if !batch::delete(IterableMap::map(&self.known), &old) {
            for h in &old {
                let _ = self.known.remove(h);
            }
        }
        self.leaving = old.iter().filter_map(|h| Some((*h, self.kept.remove(h)?.ips))).collect();
    }
}
