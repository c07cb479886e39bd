//! Kernel symbols from `/proc/kallsyms`, read once on the first kernel address.

use super::frame::{Frame, FrameKind};

/// The `module` of every kernel frame.
pub(crate) const KERNEL_MODULE: &str = "[kernel]";

/// Text symbols of the running kernel, sorted by address.
#[derive(Debug, Default)]
pub(crate) struct Kallsyms {
    /// (address, start of the name in `names`, its length).
    syms: Vec<(u64, u32, u32)>,
    names: String,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`; empty when it is unreadable or shows no addresses (not permitted:
    /// `kptr_restrict`, or no `CAP_SYSLOG`).
    pub(crate) fn load() -> Self {
        std::fs::read_to_string("/proc/kallsyms").map(|t| Self::parse(&t)).unwrap_or_default()
    }

    /// Parses `ADDR TYPE NAME [MODULE]` lines, keeping code symbols.
    pub(crate) fn parse(text: &str) -> Self {
        let mut k = Kallsyms::default();
        for line in text.lines() {
            let mut it = line.split_ascii_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (it.next(), it.next(), it.next()) else { continue };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
            if addr == 0 {
                continue;
            }
            let (Ok(at), Ok(len)) = (u32::try_from(k.names.len()), u32::try_from(name.len())) else { break };
            k.names.push_str(name);
            k.syms.push((addr, at, len));
        }
        // Stable: of several names at one address, the first listed stays first.
        k.syms.sort_by_key(|s| s.0);
        k
    }

    /// The frame of kernel address `addr`.
    pub(crate) fn frame(&self, addr: u64) -> Frame {
        let i = self.syms.partition_point(|s| s.0 <= addr);
        let name = match i.checked_sub(1).map(|i| (i, self.syms[i].0)) {
            // The first of the names at that address.
            Some((_, at)) => {
                let first = self.syms.partition_point(|s| s.0 < at);
                let (_, start, len) = self.syms[first];
                self.names[start as usize..(start + len) as usize].to_string()
            }
            None => KERNEL_MODULE.to_string(),
        };
        Frame {
            name,
            kind: FrameKind::Kernel,
            module: Some(KERNEL_MODULE.into()),
            file: None,
            line: None,
            col: None,
            tier: None,
            exec_line: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::KERNEL_ADDRESS_MIN;

    #[test]
    fn names_the_symbol_at_or_below() {
        let k = Kallsyms::parse(
            "ffffffff81000000 T _stext\n\
             ffffffff81000000 T _text\n\
             ffffffff81001000 t do_syscall_64\n\
             ffffffff81002000 D some_data\n\
             ffffffff81003000 T ext4_read [ext4]\n\
             garbage\n\
             zzzz T bad\n",
        );
        assert_eq!(k.frame(0xffffffff81000010).name, "_stext");
        assert_eq!(k.frame(0xffffffff81001fff).name, "do_syscall_64");
        assert_eq!(k.frame(0xffffffff81002500).name, "do_syscall_64", "data symbols are not code");
        assert_eq!(k.frame(0xffffffff81003001).name, "ext4_read");
        let f = k.frame(0xffffffff80000000);
        assert_eq!((f.name.as_str(), f.kind, f.module.as_deref()), ("[kernel]", FrameKind::Kernel, Some("[kernel]")));
    }

    #[test]
    fn hidden_addresses_name_the_kernel() {
        let k = Kallsyms::parse("0000000000000000 T _stext\n0000000000000000 t do_syscall_64\n");
        assert_eq!(k.frame(0xffffffff81001000).name, "[kernel]");
    }

    #[test]
    fn reads_this_kernel() {
        let k = Kallsyms::load();
        let f = k.frame(KERNEL_ADDRESS_MIN + 0x10);
        assert_eq!(f.kind, FrameKind::Kernel);
        if let Some(&(addr, _, _)) =
            k.syms.iter().find(|s| &k.names[s.1 as usize..(s.1 + s.2) as usize] == "do_syscall_64")
        {
            assert_eq!(k.frame(addr + 1).name, "do_syscall_64");
        }
    }
}
