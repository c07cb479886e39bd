// looptop's in-kernel source: ticks from the wait calls, stacks counted in the kernel, and the
// samples and off-CPU waits of stalls sent one by one. Read by src/source/bpf/ (DESIGN.md).
//
// Built by `src/source/bpf/build.sh` (clang -target bpf); the object is committed so that
// building looptop needs no clang. Needs no kernel headers: the classic tracepoints' records
// have a stable layout (see /sys/kernel/tracing/events/*/*/format), and the one kernel structure
// read (task_struct's pid, in tp_btf/sched_switch) is relocated against the kernel's BTF when
// loaded (CO-RE); where that program does not load, the classic tracepoint is used.
//
// SPDX-License-Identifier: GPL-2.0 (the helpers bpf_get_stack and bpf_ktime_get_ns need it)

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef int __s32;
typedef unsigned long long __u64;
typedef long long __s64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

enum {
    BPF_MAP_TYPE_HASH = 1,
    BPF_MAP_TYPE_ARRAY = 2,
    BPF_MAP_TYPE_PERCPU_ARRAY = 6,
    BPF_MAP_TYPE_LRU_HASH = 9,
    BPF_MAP_TYPE_RINGBUF = 27
};
enum { BPF_ANY = 0, BPF_NOEXIST = 1 };
#define BPF_F_NO_PREALLOC (1U << 0)
#define BPF_F_MMAPABLE (1U << 10)
#define BPF_F_USER_STACK (1ULL << 8)

// x86_64's registers: a uprobe's context (the verifier knows it by this name), and the user
// registers at a system call (for the stack pointer).
struct pt_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8, ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};

static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static long (*bpf_get_stack)(void *ctx, void *buf, __u32 size, __u64 flags) = (void *)67;
static long (*bpf_probe_read_user)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)112;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static void *(*bpf_get_current_task_btf)(void) = (void *)158;
static struct pt_regs *(*bpf_task_pt_regs)(void *task) = (void *)175;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;

// Must match src/source/bpf/layout.rs.
#define SLOTS 128
#define HIST_SUB_BITS 7
#define HIST_SUB (1ULL << HIST_SUB_BITS)
#define HIST_MAX_EXP 42
#define HIST_BUCKETS ((HIST_MAX_EXP - HIST_SUB_BITS + 2) * HIST_SUB)
#define STACK_DEPTH 127

enum phase { UNKNOWN = 0, WAITING = 1, BUSY = 2 };
enum record_kind { REC_STALL = 1, REC_SAMPLE = 2, REC_OFF_CPU = 3, REC_GC = 4 };

// Set by looptop before loading: the stall floor (ns).
volatile const __u64 stall_floor_ns = 10000000;

// One thread that waited in a wait call (a loop) or is assumed to be in a tick.
struct slot {
    __u32 seq;     // odd while the thread updates the slot
    __u32 tgid;
    __u32 tid;
    __u32 phase;
    __u64 since;   // start of the current phase (ns)
    __u64 loop_ns; // when it became a loop, 0 before
    __u64 ticks;
    __u64 busy_ns;
    __u64 idle_ns;
    __u64 max_busy_ns;
    __u64 exited_ns; // when the thread exited (sched_process_exit), 0 while it runs
    char comm[16];
    __u64 tick_sp;   // user stack pointer at the wait that began the current tick, 0 unknown
    __u64 wait_sp;   // the same at the wait under way
    __u32 nested;    // the wait under way is nested: its exit is no tick's start
    __u32 pool;      // POOL_* bits: what the thread is to a pool of loops
};

// A slot's `pool` bits. NOTED: the thread's name is in `waiter_names`. WORKER: a pool's worker,
// whose futex parks are waits. NOT_WORKER: named as its process, its futex waits stay in ticks.
#define POOL_NOTED 1
#define POOL_WORKER 2
#define POOL_NOT_WORKER 4

struct stack_key {
    __u32 tgid;
    __u32 tid;
    __u64 user;    // stacks by hash (see `stack_hash`), 0 when none
    __u64 kernel;
    __u32 off_cpu; // 1: the value is ns off the CPU in a tick, 0: on-CPU samples
    __u32 pad;
};

// A stack's return addresses, innermost first.
struct stack {
    __u32 len; // frames in `ips`
    __u32 pad;
    __u64 ips[STACK_DEPTH];
};

struct record {
    __u32 kind;
    __u32 tgid;
    __u32 tid;
    __u32 pad;
    __u64 user;    // stacks by hash, 0 when none
    __u64 kernel;
    __u64 t;       // stall start, sample time, or switch-out time
    __u64 value;   // stall duration or off-CPU time (ns); 0 for an on-CPU sample
    __u64 tick;    // start of the tick it belongs to
};

// Bytes of user stack copied with each stall sample, from the stack pointer up: looptop unwinds
// them with the binaries' CFI where frame pointers lie (code built without them). Must match
// src/source/bpf/layout.rs.
#define STACK_COPY 16384

// A thread's user registers and the top of its user stack.
struct user_copy {
    __u64 ip, sp, bp; // user registers, 0 when unknown
    __u64 len;        // bytes of `stack` copied, 0 when none could be read
    __u64 t;          // when it was taken (ns)
    __u8 stack[STACK_COPY];
};

// A stall's sample (on-CPU, or off-CPU) with the thread's user registers and stack.
struct sample_copy {
    struct record r;
    struct user_copy u;
};

struct switched_out {
    __u64 t;
    __u64 user;
    __u64 kernel;
};

// Processes observed: tgid → its name (its main thread's, as /proc/PID/comm), written by looptop.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, __u32);
    __type(value, char[16]);
} targets SEC(".maps");

// A thread name within a process.
struct named {
    __u32 tgid;
    char comm[16];
};

// The names of the threads that waited for events, by process: a thread named apart from its
// process that bears one of them is a pool's worker (see `futex_parks`).
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096);
    __type(key, struct named);
    __type(value, __u32);
} waiter_names SEC(".maps");

// Thread id → its slot.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u32);
} slot_of SEC(".maps");

// [0]: the next free slot; [1]: threads that found no slot; [2]: stacks sent to `new_stacks`.
// Mapped by looptop, which takes slots for the threads it finds when it attaches, and reads
// `new_stacks` only when [2] moved.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, __u64);
} counters SEC(".maps");

// The slots, mapped by looptop and read every poll without a system call.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, SLOTS);
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, struct slot);
} slots SEC(".maps");

// Each slot's completed ticks by busy time, in the agent's log-linear buckets.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, SLOTS * HIST_BUCKETS);
    __uint(map_flags, BPF_F_MMAPABLE);
    __type(key, __u32);
    __type(value, __u64);
} hist SEC(".maps");

// Stacks by hash, sent once: a stack not in `known` is copied into `new_stacks`, which looptop
// empties every poll (keeping the frames), and marked known; after that only its hash travels.
// looptop removes from `known` the stacks it forgets (and the LRU map drops the oldest when full),
// so a stack seen again after that is sent again. (A stack-trace map would hand looptop only ids,
// each read and freed with two system calls per poll, and collide when kept.)
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64);
    __type(value, struct stack);
} new_stacks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 32768);
    __type(key, __u64);
    __type(value, __u8);
} known SEC(".maps");

// Where a stack is taken before it is hashed (too big for the BPF stack): [0] for the sampler,
// [1] for sched_switch (which runs with interrupts off, so the two never share one).
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 2);
    __type(key, __u32);
    __type(value, struct stack);
} scratch SEC(".maps");

// (thread, stacks) → samples or ns off-CPU, outside stalls; read and cleared by looptop.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16384);
    __type(key, struct stack_key);
    __type(value, __u64);
} counts SEC(".maps");

// Loop threads off the CPU inside a tick: since when, and their stacks at the switch.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct switched_out);
} off_cpu SEC(".maps");

// Where a switch-out's user stack is copied before it goes into `off_copies` (too big for the
// BPF stack).
struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct user_copy);
} copy_scratch SEC(".maps");

// The user stack of each loop thread at its last switch-out inside a tick that took one (see
// COPY_EVERY_NS), for the stall's off-CPU sample; the least recently used go first.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 256);
    __type(key, __u32);
    __type(value, struct user_copy);
} off_copies SEC(".maps");

// A loop thread's stack is copied at a switch-out inside a tick at most this often, and sent
// with a sleep at least this long: a tick that sleeps a hundred thousand times (a thread that
// reads a pipe a byte at a time) would otherwise copy 16 KiB at each, and the sleeps that make a
// stall are the long ones.
#define COPY_EVERY_NS 1000000ULL

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 8 << 20); // a stall sample with its stack copy is 16 KiB: 500 of them
} records SEC(".maps");

// [0] records the ring buffer had no room for, [1] stacks `new_stacks` had no room for (or that
// could not be read), [2] samples that found counts full.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} lost SEC(".maps");

static __always_inline void count_lost(__u32 what) {
    __u64 *n = bpf_map_lookup_elem(&lost, &what);
    if (n)
        __sync_fetch_and_add(n, 1);
}

// Sends one record through the ring buffer; returns 0 (and counts it lost) when it was full.
static __always_inline int send(__u32 kind, __u32 tgid, __u32 tid, __u64 user, __u64 kernel, __u32 pad, __u64 t,
                                __u64 value, __u64 tick) {
    struct record *r = bpf_ringbuf_reserve(&records, sizeof(*r), 0);
    if (!r) {
        count_lost(0);
        return 0;
    }
    r->kind = kind;
    r->tgid = tgid;
    r->tid = tid;
    r->user = user;
    r->kernel = kernel;
    r->pad = pad;
    r->t = t;
    r->value = value;
    r->tick = tick;
    bpf_ringbuf_submit(r, 0);
    return 1;
}

static __always_inline int observed(__u32 tgid) {
    return bpf_map_lookup_elem(&targets, &tgid) != 0;
}

// The log-linear bucket of `ns` with 2^sub_bits buckets per power of two, exact below 2^sub_bits,
// the last bucket from 2^(max_exp+1) on (looptop_abi::hist_bucket with its constants).
static __always_inline __u32 log_linear_bucket(__u64 ns, __u32 sub_bits, __u32 max_exp) {
    __u64 sub = 1ULL << sub_bits;
    if (ns < sub)
        return ns;
    __u32 msb = 0;
    __u64 v = ns;
    if (v >> 32) { v >>= 32; msb += 32; }
    if (v >> 16) { v >>= 16; msb += 16; }
    if (v >> 8) { v >>= 8; msb += 8; }
    if (v >> 4) { v >>= 4; msb += 4; }
    if (v >> 2) { v >>= 2; msb += 2; }
    if (v >> 1) { msb += 1; }
    if (msb > max_exp)
        return (max_exp - sub_bits + 2) * sub - 1;
    __u32 shift = msb - sub_bits;
    return (shift + 1) * sub + ((ns >> shift) - sub);
}

static __always_inline __u32 hist_bucket(__u64 ns) {
    return log_linear_bucket(ns, HIST_SUB_BITS, HIST_MAX_EXP);
}

// The slot of the calling thread, taking a free one when `create`.
static __always_inline struct slot *my_slot(__u32 tgid, __u32 tid, int create) {
    __u32 *idx = bpf_map_lookup_elem(&slot_of, &tid);
    if (idx) {
        struct slot *s = bpf_map_lookup_elem(&slots, idx);
        if (s && s->tgid == tgid && s->tid == tid)
            return s;
        // A reused thread id of another process: that slot is not this thread's.
        if (!create)
            return 0;
    }
    if (!create)
        return 0;
    __u32 zero = 0;
    __u64 *next = bpf_map_lookup_elem(&counters, &zero);
    if (!next)
        return 0;
    __u32 i = __sync_fetch_and_add(next, 1);
    if (i >= SLOTS) {
        __u32 one = 1;
        __u64 *missing = bpf_map_lookup_elem(&counters, &one);
        if (missing)
            __sync_fetch_and_add(missing, 1);
        return 0;
    }
    struct slot *s = bpf_map_lookup_elem(&slots, &i);
    if (!s)
        return 0;
    s->tgid = tgid;
    s->tid = tid;
    s->phase = UNKNOWN;
    s->tick_sp = 0;
    s->nested = 0;
    s->pool = 0;
    bpf_get_current_comm(s->comm, sizeof(s->comm));
    bpf_map_update_elem(&slot_of, &tid, &i, BPF_ANY);
    return s;
}

static __always_inline void start_loop(struct slot *s, __u64 at) {
    if (!s->loop_ns)
        s->loop_ns = at;
}

// The slot of a thread of an observed process at a wait call (taken at its first), or none.
static __always_inline struct slot *at_wait_call(__u32 *tgid, __u32 *tid) {
    __u64 id = bpf_get_current_pid_tgid();
    *tgid = id >> 32;
    *tid = (__u32)id;
    if (!observed(*tgid))
        return 0;
    return my_slot(*tgid, *tid, 1);
}

// A syscall tracepoint's entry record: the common header, the call's number, its arguments.
struct sys_enter_record {
    __u64 common;
    __s32 nr;
    __u32 pad;
    __u64 args[6];
};

// How a wait call's timeout is passed: an int of ms (0: return at once), or a pointer to a
// timespec or timeval (zero: return at once; null: wait for ever).
#define TIMEOUT_MS 0
#define TIMEOUT_PTR 1

// Whether the call's timeout is zero: it only checks for events.
static __always_inline int zero_timeout(struct sys_enter_record *ctx, __u32 arg, __u32 how) {
    if (arg > 5)
        return 0;
    __u64 v = ctx->args[arg];
    if (how == TIMEOUT_MS)
        return (int)v == 0;
    __u64 t[2] = {1, 1};
    if (!v || bpf_probe_read_user(t, sizeof(t), (void *)v) != 0)
        return 0;
    return t[0] == 0 && t[1] == 0;
}

// The thread's user stack pointer at this system call.
static __always_inline __u64 user_sp(void) {
    struct pt_regs *regs = bpf_task_pt_regs(bpf_get_current_task_btf());
    return regs ? regs->sp : 0;
}

// A zero-timeout wait made more than this much deeper on the stack than the wait that began the
// tick is nested (looptop_abi::NESTED_MIN_BYTES).
#define NESTED_MIN_BYTES 1024

// A wait call entered: the tick under way ends (TickClock::enter in ticks.rs) — unless it is a
// nested wait: a zero-timeout check for events made deeper on the stack than the wait that began
// the tick (Redis answering BUSY from inside a Lua script), part of that tick.
static __always_inline int wait_enter(struct sys_enter_record *ctx, __u32 arg, __u32 how) {
    __u32 tgid, tid;
    struct slot *s = at_wait_call(&tgid, &tid);
    if (!s)
        return 0;
    // (The perf source's TickClock has no stack pointer: it does not tell nested waits apart.)
    __u64 sp = user_sp();
    if (s->tick_sp && sp + NESTED_MIN_BYTES < s->tick_sp && zero_timeout(ctx, arg, how)) {
        s->nested = 1;
        return 0;
    }
    s->wait_sp = sp;
    s->nested = 0;
    if (!(s->pool & POOL_NOTED)) {
        struct named n = {.tgid = tgid};
        __builtin_memcpy(n.comm, s->comm, sizeof(n.comm));
        __u32 one = 1;
        bpf_map_update_elem(&waiter_names, &n, &one, BPF_ANY);
        s->pool |= POOL_NOTED;
    }
    __u64 t = bpf_ktime_get_ns();
    s->seq++;
    if (s->phase == BUSY && t >= s->since) {
        __u64 since = s->since;
        start_loop(s, since);
        __u64 busy = t - since;
        s->ticks++;
        s->busy_ns += busy;
        if (busy > s->max_busy_ns)
            s->max_busy_ns = busy;
        __u32 i;
        __u32 *idx = bpf_map_lookup_elem(&slot_of, &tid);
        if (idx && *idx < SLOTS) {
            i = *idx * HIST_BUCKETS + hist_bucket(busy);
            __u64 *h = bpf_map_lookup_elem(&hist, &i);
            if (h)
                *h += 1;
        }
        if (busy >= stall_floor_ns)
            send(REC_STALL, tgid, tid, 0, 0, 0, since, busy, since);
    } else {
        start_loop(s, t);
    }
    s->phase = WAITING;
    s->since = t;
    s->seq++;
    return 0;
}

// A wait call returned: a tick begins (TickClock::exit), unless the wait was nested.
static __always_inline int wait_exit(void) {
    __u32 tgid, tid;
    struct slot *s = at_wait_call(&tgid, &tid);
    if (!s)
        return 0;
    if (s->nested) {
        s->nested = 0;
        return 0;
    }
    s->tick_sp = s->wait_sp;
    __u64 t = bpf_ktime_get_ns();
    s->seq++;
    if (s->phase == WAITING && t >= s->since)
        s->idle_ns += t - s->since;
    else
        start_loop(s, t);
    s->phase = BUSY;
    s->since = t;
    s->seq++;
    return 0;
}

// A wait call whose timeout is argument `arg`, passed `how`.
#define WAIT_CALL(name, arg, how)                                                                  \
    SEC("tracepoint/syscalls/sys_enter_" #name) int enter_##name(struct sys_enter_record *ctx) {   \
        return wait_enter(ctx, arg, how);                                                          \
    }                                                                                              \
    SEC("tracepoint/syscalls/sys_exit_" #name) int exit_##name(void *ctx) { return wait_exit(); }

WAIT_CALL(epoll_wait, 3, TIMEOUT_MS)
WAIT_CALL(epoll_pwait, 3, TIMEOUT_MS)
WAIT_CALL(epoll_pwait2, 3, TIMEOUT_PTR)
WAIT_CALL(poll, 2, TIMEOUT_MS)
WAIT_CALL(ppoll, 2, TIMEOUT_PTR)

// A call that was a wait only if the thread entered it as one: counted when the thread is
// waiting, ignored inside a tick (TickClock::exit_if_waiting). Never takes a slot.
static __always_inline int wait_exit_if_waiting(void) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    if (!observed(tgid))
        return 0;
    struct slot *s = my_slot(tgid, tid, 0);
    if (!s || s->phase != WAITING)
        return 0;
    return wait_exit();
}

// select and pselect6 wait for events when given descriptors (gunicorn's sync workers); with
// none they sleep (CPython 3.10's time.sleep), inside a tick.
#define WAIT_CALL_WITH_FDS(name, arg)                                                              \
    SEC("tracepoint/syscalls/sys_enter_" #name) int enter_##name(struct sys_enter_record *ctx) {   \
        return ctx->args[0] ? wait_enter(ctx, arg, TIMEOUT_PTR) : 0;                               \
    }                                                                                              \
    SEC("tracepoint/syscalls/sys_exit_" #name) int exit_##name(void *ctx) { return wait_exit_if_waiting(); }

WAIT_CALL_WITH_FDS(select, 4)
WAIT_CALL_WITH_FDS(pselect6, 4)

// Whether two thread names are the same.
static __always_inline int same_name(const char *a, const char *b) {
    for (int i = 0; i < 16; i++) {
        if (a[i] != b[i])
            return 0;
        if (!a[i])
            return 1;
    }
    return 1;
}

// A pool's worker (tokio's multi-thread scheduler) takes turns at the runtime's epoll wait and
// parks on a futex when another holds it, maybe for all its life: its futex waits without a
// timeout are its idle, wait calls. A worker is a thread named apart from its process that bears
// the name of a thread that waited for events (the agent's pool.rs); a thread named as its
// process keeps its futex waits in its ticks (Node's `Atomics.wait`, a lock).
#define FUTEX_WAIT 0
#define FUTEX_WAIT_BITSET 9
#define FUTEX_PRIVATE_FLAG 128
#define FUTEX_CLOCK_REALTIME 256

SEC("tracepoint/syscalls/sys_enter_futex") int enter_futex(struct sys_enter_record *ctx) {
    __u32 cmd = (__u32)ctx->args[1] & ~(FUTEX_PRIVATE_FLAG | FUTEX_CLOCK_REALTIME);
    if ((cmd != FUTEX_WAIT && cmd != FUTEX_WAIT_BITSET) || ctx->args[3])
        return 0;
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    char *process = bpf_map_lookup_elem(&targets, &tgid);
    if (!process)
        return 0;
    struct slot *s = my_slot(tgid, tid, 0);
    if (s && (s->pool & POOL_NOT_WORKER))
        return 0;
    if (!s || !(s->pool & POOL_WORKER)) {
        struct named n = {.tgid = tgid};
        bpf_get_current_comm(n.comm, sizeof(n.comm));
        if (same_name(n.comm, process)) {
            if (s)
                s->pool |= POOL_NOT_WORKER;
            return 0;
        }
        if (!bpf_map_lookup_elem(&waiter_names, &n))
            return 0;
        s = my_slot(tgid, tid, 1);
        if (!s)
            return 0;
        s->pool |= POOL_WORKER;
    }
    return wait_enter(ctx, 3, TIMEOUT_PTR);
}

SEC("tracepoint/syscalls/sys_exit_futex") int exit_futex(void *ctx) { return wait_exit_if_waiting(); }

// A loop thread exits: the time, so that its open tick ends there and not when looptop next
// looks (a process is found gone at the next poll).
SEC("tracepoint/sched/sched_process_exit") int on_exit(void *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    if (!observed(tgid))
        return 0;
    struct slot *s = my_slot(tgid, tid, 0);
    if (!s)
        return 0;
    s->seq++;
    s->exited_ns = bpf_ktime_get_ns();
    s->seq++;
    return 0;
}

// The start of the tick `s` is in, when it is already at least the stall floor old.
static __always_inline __u64 stalled_tick(struct slot *s, __u64 now) {
    if (s && s->phase == BUSY && now >= s->since && now - s->since >= stall_floor_ns)
        return s->since;
    return 0;
}

static __always_inline void add_count(struct stack_key *k, __u64 v) {
    __u64 *n = bpf_map_lookup_elem(&counts, k);
    if (n) {
        __sync_fetch_and_add(n, v);
        return;
    }
    if (bpf_map_update_elem(&counts, k, &v, BPF_NOEXIST) != 0) {
        n = bpf_map_lookup_elem(&counts, k);
        if (n)
            __sync_fetch_and_add(n, v);
        else
            count_lost(2);
    }
}

// Set by looptop: 1 to take kernel frames too.
volatile const __u32 kernel_stacks = 1;

// FNV-1a over whole addresses, folded: 0 means "no stack".
static __always_inline __u64 stack_hash(struct stack *st) {
    __u64 h = 0xcbf29ce484222325ULL ^ st->len;
    for (__u32 i = 0; i < STACK_DEPTH; i++) {
        if (i >= st->len)
            break;
        h = (h ^ st->ips[i]) * 0x100000001b3ULL;
        h ^= h >> 31;
    }
    return h ? h : 1;
}

// One stack (user, or kernel with flags 0) by hash, sent to looptop the first time; 0 when
// there is none (a kernel thread's user stack, a sample taken in user mode's kernel stack).
static __always_inline __u64 take_stack(void *ctx, __u32 where, __u64 flags) {
    struct stack *st = bpf_map_lookup_elem(&scratch, &where);
    if (!st)
        return 0;
    long n = bpf_get_stack(ctx, st->ips, sizeof(st->ips), flags);
    if (n <= 0) {
        if (n < 0 && n != -14 /* EFAULT: no user stack */)
            count_lost(1);
        return 0;
    }
    st->len = (__u32)n / sizeof(__u64);
    __u64 h = stack_hash(st);
    if (bpf_map_lookup_elem(&known, &h))
        return h;
    long r = bpf_map_update_elem(&new_stacks, &h, st, BPF_NOEXIST);
    if (r != 0 && r != -17 /* EEXIST: sent by another CPU since */) {
        count_lost(1);
        return 0;
    }
    __u8 one = 1;
    bpf_map_update_elem(&known, &h, &one, BPF_ANY);
    __u32 sent = 2;
    __u64 *count = bpf_map_lookup_elem(&counters, &sent);
    if (count)
        __sync_fetch_and_add(count, 1);
    return h;
}

static __always_inline void take_stacks(void *ctx, __u32 where, __u64 *user, __u64 *kernel) {
    *user = take_stack(ctx, where, BPF_F_USER_STACK);
    *kernel = kernel_stacks ? take_stack(ctx, where, 0) : 0;
}

// Set by looptop: 1 to send a copy of the user stack with each stall sample.
volatile const __u32 stack_copies = 1;

// The current thread's user registers (those it left user space with: where it runs, if
// sampled there) and as much of its user stack as can be read, up to STACK_COPY bytes. A copy
// that would cross the top of the stack (a page boundary) faults as a whole, so the lengths that
// end at each of the next page boundaries are tried, longest first: the copy reaches the top of
// a stack that is shallower than STACK_COPY exactly (a main thread's sits below the environment
// strings, whose length varies).
static __always_inline void copy_user(struct user_copy *u) {
    u->ip = u->sp = u->bp = u->len = 0;
    u->t = bpf_ktime_get_ns();
    struct pt_regs *regs = bpf_task_pt_regs(bpf_get_current_task_btf());
    if (!regs)
        return;
    u->ip = regs->ip;
    u->sp = regs->sp;
    u->bp = regs->bp;
    if (bpf_probe_read_user(u->stack, STACK_COPY, (void *)u->sp) == 0) {
        u->len = STACK_COPY;
        return;
    }
    __u32 to_page = 4096 - (__u32)(u->sp & 4095); // 1 ..= 4096
#pragma unroll
    for (int pages = 3; pages >= 0; pages--) {
        __u32 n = to_page + pages * 4096;
        if (n > STACK_COPY)
            continue;
        if (bpf_probe_read_user(u->stack, n, (void *)u->sp) == 0) {
            u->len = n;
            return;
        }
    }
}

// A stall's sample record (`kind`, the rest as `send` takes them) with a copy of the user stack:
// the current thread's (`from` 0), or one taken before (`from`, an `off_copies` value).
static __always_inline int send_copy(__u32 kind, __u32 tgid, __u32 tid, __u64 user, __u64 kernel, __u64 t,
                                     __u64 value, __u64 tick, struct user_copy *from) {
    struct sample_copy *c = bpf_ringbuf_reserve(&records, sizeof(*c), 0);
    if (!c) {
        count_lost(0);
        return 0;
    }
    c->r.kind = kind;
    c->r.tgid = tgid;
    c->r.tid = tid;
    c->r.pad = 0;
    c->r.user = user;
    c->r.kernel = kernel;
    c->r.t = t;
    c->r.value = value;
    c->r.tick = tick;
    if (!from)
        copy_user(&c->u);
    else if (bpf_probe_read_kernel(&c->u, sizeof(c->u), from) != 0)
        c->u.len = 0;
    bpf_ringbuf_submit(c, 0);
    return 1;
}

// cpu-clock on every CPU: count the target's stacks; a stall's samples go out one by one.
SEC("perf_event") int on_cpu(void *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    if (!observed(tgid))
        return 0;
    __u64 user, kernel;
    take_stacks(ctx, 0, &user, &kernel);
    __u64 now = bpf_ktime_get_ns();
    __u64 tick = stalled_tick(my_slot(tgid, tid, 0), now);
    if (tick && (stack_copies ? send_copy(REC_SAMPLE, tgid, tid, user, kernel, now, 0, tick, 0)
                              : send(REC_SAMPLE, tgid, tid, user, kernel, 0, now, 0, tick)))
        return 0;
    struct stack_key k = {.tgid = tgid, .tid = tid, .user = user, .kernel = kernel, .off_cpu = 0, .pad = 0};
    add_count(&k, 1);
    return 0;
}

// Set by looptop: 1 to follow loop threads off the CPU inside their ticks.
volatile const __u32 off_cpu_enabled = 1;

struct sched_switch_args {
    __u64 common;
    char prev_comm[16];
    __s32 prev_pid;
    __s32 prev_prio;
    __s64 prev_state;
    char next_comm[16];
    __s32 next_pid;
    __s32 next_prio;
};

// Loop threads off the CPU in a tick, i.e. entries in `off_cpu` (approximate: an entry of a thread
// that exited while away is never taken). While it is 0, a switch-in needs no map lookup: most
// context switches on the machine are not of the target.
__u64 off_cpu_pending = 0;

// One context switch (`now` read lazily: most switches are not the target's).
static __always_inline int switched(void *ctx, __u64 prev_state, __u32 next) {
    // Switch-out: a loop thread in a tick (never one inside its wait call) leaves the CPU to
    // wait. Only a thread that goes to sleep (a state in the low byte: S, D, …): one that is
    // preempted stays runnable, and taking its stacks at every preemption (a pool worker waking
    // on the loop's CPU for each request) cost a busy server a tenth of its throughput.
    if (prev_state & 0xff) {
        __u64 id = bpf_get_current_pid_tgid();
        __u32 tgid = id >> 32, tid = (__u32)id;
        if (tid && observed(tgid)) {
            struct slot *s = my_slot(tgid, tid, 0);
            if (s && s->phase == BUSY) {
                struct switched_out o = {.t = bpf_ktime_get_ns()};
                take_stacks(ctx, 1, &o.user, &o.kernel);
                if (bpf_map_update_elem(&off_cpu, &tid, &o, BPF_ANY) == 0)
                    __sync_fetch_and_add(&off_cpu_pending, 1);
                // Its user stack too, while it is the current thread: the stall it may turn out
                // to be part of is known only when it comes back.
                struct user_copy *last = stack_copies ? bpf_map_lookup_elem(&off_copies, &tid) : 0;
                __u32 zero = 0;
                struct user_copy *u = stack_copies ? bpf_map_lookup_elem(&copy_scratch, &zero) : 0;
                if (u && !(last && o.t >= last->t && o.t - last->t < COPY_EVERY_NS)) {
                    copy_user(u);
                    u->t = o.t;
                    bpf_map_update_elem(&off_copies, &tid, u, BPF_ANY);
                }
            }
        }
    }
    // Switch-in: how long it was away.
    if (!off_cpu_pending)
        return 0;
    struct switched_out *o = bpf_map_lookup_elem(&off_cpu, &next);
    if (!o)
        return 0;
    struct switched_out out = *o;
    if (bpf_map_delete_elem(&off_cpu, &next) == 0)
        __sync_fetch_and_add(&off_cpu_pending, -1);
    __u64 now = bpf_ktime_get_ns();
    if (now < out.t)
        return 0;
    __u32 *idx = bpf_map_lookup_elem(&slot_of, &next);
    if (!idx)
        return 0;
    struct slot *s = bpf_map_lookup_elem(&slots, idx);
    if (!s || s->tid != next)
        return 0;
    __u64 tick = stalled_tick(s, now);
    // The copy taken at this very switch-out (not an older one), for a sleep long enough to count.
    struct user_copy *u = tick && stack_copies && now - out.t >= COPY_EVERY_NS ? bpf_map_lookup_elem(&off_copies, &next) : 0;
    if (u && u->t != out.t)
        u = 0;
    if (tick && (u ? send_copy(REC_OFF_CPU, s->tgid, next, out.user, out.kernel, out.t, now - out.t, tick, u)
                   : send(REC_OFF_CPU, s->tgid, next, out.user, out.kernel, 0, out.t, now - out.t, tick)))
        return 0;
    struct stack_key k = {.tgid = s->tgid, .tid = next, .user = out.user, .kernel = out.kernel, .off_cpu = 1, .pad = 0};
    add_count(&k, now - out.t);
    return 0;
}

// The classic tracepoint: works everywhere, but the kernel formats a record for it at every
// context switch on the machine before the program runs.
SEC("tracepoint/sched/sched_switch") int on_switch(struct sched_switch_args *ctx) {
    if (!off_cpu_enabled)
        return 0;
    return switched(ctx, ctx->prev_state, ctx->next_pid);
}

// The same from the raw tracepoint with BTF (kernel 5.18+: prev_state is its fourth argument):
// no record formatted, a few loads per switch that is not the target's.
struct task_struct {
    int pid;
} __attribute__((preserve_access_index));

SEC("tp_btf/sched_switch") int on_switch_btf(__u64 *ctx) {
    if (!off_cpu_enabled)
        return 0;
    struct task_struct *next = (struct task_struct *)ctx[2];
    return switched(ctx, (__u32)ctx[3], next->pid);
}

// ---- The libuv pool and V8's GC, from uprobes (src/source/perf/sites.rs finds the sites) ----
// The pool's state is kept here, per process: no record per item. A GC pause is one record.

#define WAIT_SUB_BITS 4
#define WAIT_SUB (1ULL << WAIT_SUB_BITS)
#define WAIT_MAX_EXP 40
#define WAIT_BUCKETS ((WAIT_MAX_EXP - WAIT_SUB_BITS + 2) * WAIT_SUB)

// One process's pool: items queued (submitted, not started) and running, and waits by
// duration. Only the programs write it (looptop creates it zeroed and reads it).
struct pool {
    __s64 queued;
    __s64 running;
    __u64 waits[WAIT_BUCKETS];
    __u64 wait_max[WAIT_BUCKETS];
};

// The most queued since looptop last read it (it writes the queue length back).
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, __s64);
} pool_queued_max SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, __u32);
    __type(value, struct pool);
} pools SEC(".maps");

// Item → submission time.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, __u64);
} pool_items SEC(".maps");

// Worker thread → 1 while it runs an item.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, __u32);
} pool_running SEC(".maps");

struct gc_pause {
    __u64 start;
    __u32 depth;
    __u32 kind;
};

// Thread → the GC pause it is in.
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u32);
    __type(value, struct gc_pause);
} gc_pauses SEC(".maps");

// The first and second integer arguments.
#define ARG0(ctx) ((ctx)->di)
#define ARG1(ctx) ((ctx)->si)
/* offsetof(uv_work_t, work_req) on 64-bit (src/source/perf/uprobes.rs). */
#define UV_WORK_REQ_OFFSET 88

static __always_inline __u32 wait_bucket(__u64 ns) {
    return log_linear_bucket(ns, WAIT_SUB_BITS, WAIT_MAX_EXP);
}

// The pool of the calling thread's process, when it is observed.
static __always_inline struct pool *my_pool(__u32 *tgid_out, __u32 *tid) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32;
    *tgid_out = tgid;
    *tid = (__u32)id;
    if (!observed(tgid))
        return 0;
    return bpf_map_lookup_elem(&pools, &tgid);
}

static __always_inline int queued(__u64 item) {
    __u32 tgid, tid;
    struct pool *p = my_pool(&tgid, &tid);
    if (!p)
        return 0;
    __u64 t = bpf_ktime_get_ns();
    // A build whose uv_queue_work calls uv__work_submit reports the item twice.
    if (bpf_map_update_elem(&pool_items, &item, &t, BPF_NOEXIST) != 0)
        return 0;
    __s64 q = __sync_fetch_and_add(&p->queued, 1) + 1;
    __s64 *m = bpf_map_lookup_elem(&pool_queued_max, &tgid);
    if (m && q > *m)
        *m = q;
    return 0;
}

SEC("uprobe") int pool_submit(struct pt_regs *ctx) { return queued(ARG1(ctx)); }
SEC("uprobe") int pool_queue_work(struct pt_regs *ctx) { return queued(ARG1(ctx) + UV_WORK_REQ_OFFSET); }

SEC("uprobe") int pool_start(struct pt_regs *ctx) {
    __u32 tgid, tid;
    struct pool *p = my_pool(&tgid, &tid);
    if (!p)
        return 0;
    __u64 item = ARG0(ctx);
    __u64 *at = bpf_map_lookup_elem(&pool_items, &item);
    if (at) {
        __u64 now = bpf_ktime_get_ns();
        __u64 wait = now > *at ? now - *at : 0;
        bpf_map_delete_elem(&pool_items, &item);
        __sync_fetch_and_add(&p->queued, -1);
        __u32 b = wait_bucket(wait);
        // Keeps the bound check the compiler would drop (the verifier needs to see it).
        asm volatile("" : "+r"(b));
        if (b < WAIT_BUCKETS) {
            __sync_fetch_and_add(&p->waits[b], 1);
            if (wait > p->wait_max[b])
                p->wait_max[b] = wait;
        }
    }
    __u32 one = 1;
    if (bpf_map_update_elem(&pool_running, &tid, &one, BPF_NOEXIST) == 0)
        __sync_fetch_and_add(&p->running, 1);
    return 0;
}

SEC("uretprobe") int pool_end(struct pt_regs *ctx) {
    __u32 tgid, tid;
    struct pool *p = my_pool(&tgid, &tid);
    if (!p)
        return 0;
    if (bpf_map_delete_elem(&pool_running, &tid) == 0)
        __sync_fetch_and_add(&p->running, -1);
    return 0;
}

SEC("uprobe") int gc_start(struct pt_regs *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tid = (__u32)id;
    if (!observed(id >> 32))
        return 0;
    struct gc_pause *g = bpf_map_lookup_elem(&gc_pauses, &tid);
    if (g) {
        g->depth++;
        return 0;
    }
    struct gc_pause fresh = {.start = bpf_ktime_get_ns(), .depth = 1, .kind = 0};
    bpf_map_update_elem(&gc_pauses, &tid, &fresh, BPF_ANY);
    return 0;
}

static __always_inline int gc_kind(__u32 kind) {
    __u32 tid = (__u32)bpf_get_current_pid_tgid();
    struct gc_pause *g = bpf_map_lookup_elem(&gc_pauses, &tid);
    if (g && !g->kind)
        g->kind = kind;
    return 0;
}

// GcKind::from_code: 1 minor, 2 major.
SEC("uprobe") int gc_minor(struct pt_regs *ctx) { return gc_kind(1); }
SEC("uprobe") int gc_major(struct pt_regs *ctx) { return gc_kind(2); }

SEC("uretprobe") int gc_end(struct pt_regs *ctx) {
    __u64 id = bpf_get_current_pid_tgid();
    __u32 tgid = id >> 32, tid = (__u32)id;
    struct gc_pause *g = bpf_map_lookup_elem(&gc_pauses, &tid);
    if (!g)
        return 0;
    if (g->depth > 1) {
        g->depth--;
        return 0;
    }
    struct gc_pause done = *g;
    bpf_map_delete_elem(&gc_pauses, &tid);
    __u64 now = bpf_ktime_get_ns();
    send(REC_GC, tgid, tid, 0, 0, done.kind, done.start, now > done.start ? now - done.start : 0, 0);
    return 0;
}

char LICENSE[] SEC("license") = "GPL";
