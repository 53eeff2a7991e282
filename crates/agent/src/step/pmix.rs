//! PMIx for a step's tasks (`--mpi=pmix`, as srun's): what Open MPI's ranks need to start
//! without mpirun (`berth step -n 4 ./ompi_app`), and what PMIx-only programs use.
//!
//! Each node's step process forks a helper before it enters the container: the helper
//! becomes the job's user, loads the node's PMIx library (`libpmix.so.2`, Debian's libpmix2,
//! as Slurm's mpi/pmix plugin links it) and runs its server for this node's tasks:
//!
//! ```text
//! step process ──fork──► helper (the user): PMIx_server_init, the step's namespace
//!   (sizes, nodes, ranks, each rank's node and local rank), each local task registered
//!   with the user's uid and gid, PMIx_server_setup_fork for each
//!   ◄── one JSON line on a socket pair: each task's PMIX_* variables (or why not)
//! tasks (in the container, the host's network) ──TCP loopback──► helper's server
//! fence (PMIx_Fence: Open MPI's modex) ──► the helper's fence upcall ──► a thread of its
//!   own sends this node's data to the step's PMI server on the first node
//!   (`cmd=allgather`, pmi.rs) and hands every node's back to the library
//! abort (PMIx_Abort) ──► `cmd=abort exitcode=E` to that server: the step ends with E
//! step process: tasks ended ──closes its end──► helper: PMIx_server_finalize, exits
//! ```
//!
//! The library's data store is its hash component (no shared memory files the container
//! could not see) and its regular expressions plain strings (`native`), both set in the
//! helper's environment before the library starts. Nothing of the library is loaded into
//! a process that stays root or that enters the container.

use super::{io_err, StepError, StepLaunch};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::mpsc;

/// The PMIx library the helper loads (PMIx 4's ABI).
const LIBRARY: &str = "libpmix.so.2";

const PMIX_SUCCESS: c_int = 0;
const PMIX_ERROR: c_int = -1;
const PMIX_ERR_NOT_FOUND: c_int = -46;
/// Done already: no callback is to come.
const PMIX_OPERATION_SUCCEEDED: c_int = -157;
const PMIX_BOOL: u16 = 1;
const PMIX_STRING: u16 = 3;
const PMIX_UINT16: u16 = 13;
const PMIX_UINT32: u16 = 14;
const PMIX_DATA_ARRAY: u16 = 39;
const PMIX_PROC_RANK: u16 = 40;
const PMIX_RANK_WILDCARD: u32 = u32::MAX - 1;
/// `PMIX_MAX_NSLEN` + 1.
const NSPACE_LEN: usize = 256;

/// `pmix_proc_t`.
#[repr(C)]
struct Proc {
    nspace: [c_char; NSPACE_LEN],
    rank: u32,
}

impl Proc {
    fn new(nspace: &str, rank: u32) -> Proc {
        let mut p = Proc {
            nspace: [0; NSPACE_LEN],
            rank,
        };
        for (to, from) in p.nspace.iter_mut().zip(nspace.bytes().take(NSPACE_LEN - 1)) {
            *to = from as c_char;
        }
        p
    }
}

/// `pmix_data_array_t`.
#[repr(C)]
struct DataArray {
    kind: u16,
    size: usize,
    array: *mut c_void,
}

type OpCallback = unsafe extern "C" fn(status: c_int, cbdata: *mut c_void);
type ReleaseCallback = unsafe extern "C" fn(cbdata: *mut c_void);
type ModexCallback = unsafe extern "C" fn(
    status: c_int,
    data: *const c_char,
    ndata: usize,
    cbdata: *mut c_void,
    release: Option<ReleaseCallback>,
    release_cbdata: *mut c_void,
);
type FenceUpcall = unsafe extern "C" fn(
    procs: *const Proc,
    nprocs: usize,
    info: *const c_void,
    ninfo: usize,
    data: *mut c_char,
    ndata: usize,
    cbfunc: Option<ModexCallback>,
    cbdata: *mut c_void,
) -> c_int;
type DmodexUpcall = unsafe extern "C" fn(
    proc_: *const Proc,
    info: *const c_void,
    ninfo: usize,
    cbfunc: Option<ModexCallback>,
    cbdata: *mut c_void,
) -> c_int;
type AbortUpcall = unsafe extern "C" fn(
    proc_: *const Proc,
    server_object: *mut c_void,
    status: c_int,
    msg: *const c_char,
    procs: *mut Proc,
    nprocs: usize,
    cbfunc: Option<OpCallback>,
    cbdata: *mut c_void,
) -> c_int;

/// `pmix_server_module_t` (PMIx 4: 28 upcalls); what is left NULL the library answers
/// itself or refuses as not supported.
#[repr(C)]
struct Module {
    client_connected: *const c_void,
    client_finalized: *const c_void,
    abort: Option<AbortUpcall>,
    fence_nb: Option<FenceUpcall>,
    direct_modex: Option<DmodexUpcall>,
    rest: [*const c_void; 23],
}

/// The library's functions the helper calls, looked up by name.
struct Library {
    server_init: unsafe extern "C" fn(*mut Module, *mut c_void, usize) -> c_int,
    server_finalize: unsafe extern "C" fn() -> c_int,
    register_nspace: unsafe extern "C" fn(
        *const c_char,
        c_int,
        *mut c_void,
        usize,
        Option<OpCallback>,
        *mut c_void,
    ) -> c_int,
    register_client: unsafe extern "C" fn(
        *const Proc,
        libc::uid_t,
        libc::gid_t,
        *mut c_void,
        Option<OpCallback>,
        *mut c_void,
    ) -> c_int,
    setup_fork: unsafe extern "C" fn(*const Proc, *mut *mut *mut c_char) -> c_int,
    dmodex_request: DmodexRequest,
    generate_regex: unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> c_int,
    generate_ppn: unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> c_int,
    list_start: unsafe extern "C" fn() -> *mut c_void,
    list_add: unsafe extern "C" fn(*mut c_void, *const c_char, *const c_void, u16) -> c_int,
    list_convert: unsafe extern "C" fn(*mut c_void, *mut DataArray) -> c_int,
    list_release: unsafe extern "C" fn(*mut c_void),
    error_string: unsafe extern "C" fn(c_int) -> *const c_char,
}

impl Library {
    /// Loads the library (global symbols: its components, loaded by it, link against it).
    fn load(library: &str) -> Result<Library, String> {
        let name = CString::new(library).map_err(|e| e.to_string())?;
        // SAFETY: dlopen of a library by name; its constructors run (PMIx's have none that
        // need more than the loader).
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if handle.is_null() {
            return Err(format!(
                "--mpi=pmix: this node has no PMIx library ({library}: {}); install it (Debian: libpmix2) or use --mpi=pmi2",
                dl_error()
            ));
        }
        macro_rules! symbol {
            ($name:literal) => {{
                let name = CString::new($name).expect("no NUL");
                // SAFETY: dlsym on a live handle.
                let f = unsafe { libc::dlsym(handle, name.as_ptr()) };
                if f.is_null() {
                    return Err(format!(
                        "--mpi=pmix: {library} has no {} (PMIx 4 or later is needed)",
                        $name
                    ));
                }
                // SAFETY: the symbol is the PMIx 4 function of this name, whose C signature
                // the field's type repeats (pmix.h, pmix_server.h).
                unsafe { function(f) }
            }};
        }
        Ok(Library {
            server_init: symbol!("PMIx_server_init"),
            server_finalize: symbol!("PMIx_server_finalize"),
            register_nspace: symbol!("PMIx_server_register_nspace"),
            register_client: symbol!("PMIx_server_register_client"),
            setup_fork: symbol!("PMIx_server_setup_fork"),
            dmodex_request: symbol!("PMIx_server_dmodex_request"),
            generate_regex: symbol!("PMIx_generate_regex"),
            generate_ppn: symbol!("PMIx_generate_ppn"),
            list_start: symbol!("PMIx_Info_list_start"),
            list_add: symbol!("PMIx_Info_list_add"),
            list_convert: symbol!("PMIx_Info_list_convert"),
            list_release: symbol!("PMIx_Info_list_release"),
            error_string: symbol!("PMIx_Error_string"),
        })
    }

    /// `what` failed with `status`, in the library's words.
    fn failed(&self, what: &str, status: c_int) -> String {
        // SAFETY: PMIx_Error_string returns a static string for any status.
        let text = unsafe { CStr::from_ptr((self.error_string)(status)) };
        format!("PMIx: {what}: {} ({status})", text.to_string_lossy())
    }

    /// One of the library's regular expressions (`generate_regex`, `generate_ppn`) of `input`.
    fn regex(
        &self,
        generate: unsafe extern "C" fn(*const c_char, *mut *mut c_char) -> c_int,
        input: &str,
    ) -> Result<String, String> {
        let input = CString::new(input).map_err(|e| e.to_string())?;
        let mut out: *mut c_char = std::ptr::null_mut();
        // SAFETY: a NUL-terminated input and a place for the allocated answer.
        let status = unsafe { generate(input.as_ptr(), &mut out) };
        if status != PMIX_SUCCESS || out.is_null() {
            return Err(self.failed("generating the node map", status));
        }
        // SAFETY: the library returned a NUL-terminated string it malloc'd (native regex).
        let text = unsafe { CStr::from_ptr(out) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: freeing what the library malloc'd for us.
        unsafe { libc::free(out.cast()) };
        Ok(text)
    }
}

/// A symbol's address as the function pointer type `F`.
///
/// # Safety
/// `F` must be the type of the function at `symbol`.
unsafe fn function<F: Copy>(symbol: *mut c_void) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: as the caller promises; the sizes are equal.
    unsafe { std::mem::transmute_copy(&symbol) }
}

fn dl_error() -> String {
    // SAFETY: dlerror returns NULL or a string valid until the next dl call.
    let e = unsafe { libc::dlerror() };
    match e.is_null() {
        true => "not found".into(),
        // SAFETY: checked non-NULL above.
        false => unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned(),
    }
}

/// A value for an info list.
enum Value {
    Str(String),
    U32(u32),
    U16(u16),
    Rank(u32),
    Bool(bool),
    /// An array of infos (`PMIX_PROC_DATA`).
    Infos(Vec<(&'static str, Value)>),
}

/// `infos` as the library's array of `pmix_info_t` (freed by the caller with the list, which
/// is returned alongside).
fn info_array(lib: &Library, infos: &[(&str, Value)]) -> Result<(*mut c_void, DataArray), String> {
    // SAFETY: a fresh list; every add below copies its value into it.
    let list = unsafe { (lib.list_start)() };
    for (key, value) in infos {
        let key_c = CString::new(*key).expect("keys have no NUL");
        let status = match value {
            Value::Str(s) => {
                let s = CString::new(s.as_str()).map_err(|e| e.to_string())?;
                // SAFETY: PMIX_STRING takes a char* (copied).
                unsafe { (lib.list_add)(list, key_c.as_ptr(), s.as_ptr().cast(), PMIX_STRING) }
            }
            Value::U32(v) | Value::Rank(v) => {
                let kind = match value {
                    Value::Rank(_) => PMIX_PROC_RANK,
                    _ => PMIX_UINT32,
                };
                // SAFETY: PMIX_UINT32 and PMIX_PROC_RANK take a pointer to a uint32_t.
                unsafe { (lib.list_add)(list, key_c.as_ptr(), (v as *const u32).cast(), kind) }
            }
            // SAFETY: PMIX_UINT16 takes a pointer to a uint16_t.
            Value::U16(v) => unsafe {
                (lib.list_add)(list, key_c.as_ptr(), (v as *const u16).cast(), PMIX_UINT16)
            },
            // SAFETY: PMIX_BOOL takes a pointer to a C bool (one byte).
            Value::Bool(v) => unsafe {
                (lib.list_add)(list, key_c.as_ptr(), (v as *const bool).cast(), PMIX_BOOL)
            },
            Value::Infos(inner) => {
                let (inner_list, mut array) = info_array(lib, inner)?;
                // SAFETY: PMIX_DATA_ARRAY takes a pointer to a pmix_data_array_t (copied
                // deep), which stays alive until its list is released after.
                let status = unsafe {
                    (lib.list_add)(
                        list,
                        key_c.as_ptr(),
                        (&mut array as *mut DataArray).cast(),
                        PMIX_DATA_ARRAY,
                    )
                };
                // SAFETY: the list the inner array came from.
                unsafe { (lib.list_release)(inner_list) };
                status
            }
        };
        if status != PMIX_SUCCESS {
            return Err(lib.failed(&format!("describing {key}"), status));
        }
    }
    let mut array = DataArray {
        kind: 0,
        size: 0,
        array: std::ptr::null_mut(),
    };
    // SAFETY: the list converted into a data array of pmix_info_t it allocates.
    let status = unsafe { (lib.list_convert)(list, &mut array) };
    if status != PMIX_SUCCESS {
        return Err(lib.failed("describing the step", status));
    }
    Ok((list, array))
}

/// Waits for a library operation that answers through an op callback.
struct Completion {
    tx: mpsc::Sender<c_int>,
    rx: mpsc::Receiver<c_int>,
}

unsafe extern "C" fn on_completion(status: c_int, cbdata: *mut c_void) {
    // SAFETY: cbdata is the Sender that `Completion::wait` passed, alive until it returns.
    let tx = unsafe { &*(cbdata as *const mpsc::Sender<c_int>) };
    let _ = tx.send(status);
}

impl Completion {
    fn new() -> Completion {
        let (tx, rx) = mpsc::channel();
        Completion { tx, rx }
    }

    /// Runs `call` with the callback and its data; its status, or the callback's.
    fn wait(&self, call: impl FnOnce(Option<OpCallback>, *mut c_void) -> c_int) -> c_int {
        let cbdata = &self.tx as *const mpsc::Sender<c_int> as *mut c_void;
        match call(Some(on_completion), cbdata) {
            PMIX_SUCCESS => self.rx.recv().unwrap_or(PMIX_ERROR),
            // Done already (PMIX_OPERATION_SUCCEEDED), or failed.
            PMIX_OPERATION_SUCCEEDED => PMIX_SUCCESS,
            status => status,
        }
    }
}

/// The step as the helper describes it to the library.
struct Layout {
    nspace: String,
    /// Each node's name and number of tasks, ranks numbered node by node.
    nodes: Vec<(String, u32)>,
    /// This node's place among them.
    here: usize,
}

impl Layout {
    fn of(launch: &StepLaunch) -> Layout {
        Layout {
            nspace: format!("berth.{}.{}", launch.job_id, launch.step_id),
            nodes: launch.layout(),
            here: launch.node_index,
        }
    }

    fn size(&self) -> u32 {
        self.nodes.iter().map(|(_, n)| n).sum()
    }

    /// The ranks of node `node`.
    fn ranks(&self, node: usize) -> std::ops::Range<u32> {
        let first: u32 = self.nodes[..node].iter().map(|(_, n)| n).sum();
        first..first + self.nodes[node].1
    }

    /// The node of rank `rank`.
    fn node_of(&self, rank: u32) -> usize {
        super::pmi::node_of(self.nodes.iter().map(|(_, n)| *n), rank)
    }

    /// The comma-separated ranks of node `node` (PMIX_LOCAL_PEERS, and the process map's
    /// input with `;` between nodes).
    fn peers(&self, node: usize) -> String {
        self.ranks(node)
            .map(|r| r.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The namespace's information: the job's, this node's, and each rank's
    /// (`PMIX_PROC_DATA`), as Slurm's PMIx plugin gives it to Open MPI.
    fn infos(&self, lib: &Library) -> Result<Vec<(&'static str, Value)>, String> {
        let names: Vec<&str> = self.nodes.iter().map(|(n, _)| n.as_str()).collect();
        let node_map = lib.regex(lib.generate_regex, &names.join(","))?;
        let per_node: Vec<String> = (0..self.nodes.len()).map(|n| self.peers(n)).collect();
        let proc_map = lib.regex(lib.generate_ppn, &per_node.join(";"))?;
        let (size, nnodes) = (self.size(), self.nodes.len() as u32);
        let here = self.ranks(self.here);
        let mut infos = vec![
            ("pmix.jobid", Value::Str(self.nspace.clone())),
            ("pmix.univ.size", Value::U32(size)),
            ("pmix.job.size", Value::U32(size)),
            ("pmix.max.size", Value::U32(size)),
            ("pmix.app.size", Value::U32(size)),
            ("pmix.job.napps", Value::U32(1)),
            ("pmix.num.nodes", Value::U32(nnodes)),
            ("pmix.spawned", Value::Bool(false)),
            ("pmix.aldr", Value::Rank(0)),
            ("pmix.nmap", Value::Str(node_map)),
            ("pmix.pmap", Value::Str(proc_map)),
            ("pmix.local.size", Value::U32(here.len() as u32)),
            ("pmix.lpeers", Value::Str(self.peers(self.here))),
            ("pmix.lldr", Value::Rank(here.start)),
            ("pmix.hname", Value::Str(self.nodes[self.here].0.clone())),
            ("pmix.nodeid", Value::U32(self.here as u32)),
        ];
        // Each rank's own, node by node.
        let ranks = self
            .nodes
            .iter()
            .enumerate()
            .flat_map(|(node, (_, n))| (0..*n).map(move |local| (node, local as u16)));
        for (rank, (node, local)) in (0..size).zip(ranks) {
            infos.push((
                "pmix.pdata",
                Value::Infos(vec![
                    ("pmix.rank", Value::Rank(rank)),
                    ("pmix.appnum", Value::U32(0)),
                    ("pmix.aldr", Value::Rank(0)),
                    ("pmix.grank", Value::Rank(rank)),
                    ("pmix.apprank", Value::Rank(rank)),
                    ("pmix.lrank", Value::U16(local)),
                    ("pmix.nrank", Value::U16(local)),
                    ("pmix.nodeid", Value::U32(node as u32)),
                    ("pmix.hname", Value::Str(self.nodes[node].0.clone())),
                ]),
            ));
        }
        Ok(infos)
    }

    /// The nodes that take part in a fence over `procs` (a rank, or every rank of the
    /// namespace; none named: all of them); sorted.
    fn fence_nodes(&self, procs: &[(String, u32)]) -> Vec<usize> {
        if procs.is_empty() {
            return (0..self.nodes.len()).collect();
        }
        let mut nodes: Vec<usize> = Vec::new();
        for (nspace, rank) in procs {
            if *nspace != self.nspace || *rank == PMIX_RANK_WILDCARD {
                return (0..self.nodes.len()).collect();
            }
            nodes.push(self.node_of(*rank));
        }
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }
}

/// A fence the library asked the helper for: this node's data, the nodes taking part, and
/// where the gathered data goes.
struct Fence {
    nodes: Vec<usize>,
    data: Vec<u8>,
    cbfunc: Option<ModexCallback>,
    cbdata: *mut c_void,
}

// SAFETY: `cbdata` is the library's, handed back to it once, from whichever thread; the
// library's callbacks thread-shift into its own progress thread.
unsafe impl Send for Fence {}

/// What the upcalls (called on the library's thread) need.
struct Upcalls {
    layout: Layout,
    fences: std::sync::Mutex<mpsc::Sender<Fence>>,
    /// The step's PMI server, which takes aborts.
    coordinator: Option<super::pmi::Coordinator>,
    /// The connection to it of a step on more than one node.
    link: Option<Link>,
}

static UPCALLS: std::sync::OnceLock<Upcalls> = std::sync::OnceLock::new();

unsafe extern "C" fn fence_upcall(
    procs: *const Proc,
    nprocs: usize,
    _info: *const c_void,
    _ninfo: usize,
    data: *mut c_char,
    ndata: usize,
    cbfunc: Option<ModexCallback>,
    cbdata: *mut c_void,
) -> c_int {
    let Some(up) = UPCALLS.get() else {
        return PMIX_ERROR;
    };
    let procs: Vec<(String, u32)> = match nprocs {
        0 => Vec::new(),
        // SAFETY: the library passes `nprocs` procs.
        _ => unsafe { std::slice::from_raw_parts(procs, nprocs) }
            .iter()
            .map(|p| {
                // SAFETY: a proc's nspace is NUL-terminated within its array.
                let ns = unsafe { CStr::from_ptr(p.nspace.as_ptr()) };
                (ns.to_string_lossy().into_owned(), p.rank)
            })
            .collect(),
    };
    let data = match ndata {
        0 => Vec::new(),
        // SAFETY: the library passes `ndata` bytes at `data`, alive for this call.
        _ => unsafe { std::slice::from_raw_parts(data.cast::<u8>(), ndata) }.to_vec(),
    };
    let fence = Fence {
        nodes: up.layout.fence_nodes(&procs),
        data,
        cbfunc,
        cbdata,
    };
    match up.fences.lock().map(|tx| tx.send(fence)) {
        Ok(Ok(())) => PMIX_SUCCESS,
        _ => PMIX_ERROR,
    }
}

unsafe extern "C" fn abort_upcall(
    _proc: *const Proc,
    _server_object: *mut c_void,
    status: c_int,
    msg: *const c_char,
    _procs: *mut Proc,
    _nprocs: usize,
    _cbfunc: Option<OpCallback>,
    _cbdata: *mut c_void,
) -> c_int {
    if !msg.is_null() {
        // SAFETY: the library's NUL-terminated message.
        let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
        if !msg.is_empty() {
            berth_core::say!("berth step: a task aborted (PMIx): {msg}");
        }
    }
    // The step's PMI server ends the step with the task's status, on every node.
    if let Some(server) = UPCALLS.get().and_then(|u| u.coordinator.as_ref()) {
        if let Ok(mut c) = server.connect() {
            let _ = writeln!(c, "cmd=abort exitcode={}", status.clamp(0, 255));
        }
    }
    PMIX_OPERATION_SUCCEEDED
}

unsafe extern "C" fn release_gathered(cbdata: *mut c_void) {
    // SAFETY: the Box<Vec<u8>> leaked for the library in `serve_fences`, given back once.
    drop(unsafe { Box::from_raw(cbdata.cast::<Vec<u8>>()) });
}

/// The helper's connection to the step's PMI server on the first node, for a step on more
/// than one node: its fences go there, and its requests for other nodes' ranks' data; other
/// nodes' requests for its own ranks' data come from there (see pmi.rs).
struct Link {
    write: std::sync::Mutex<std::net::TcpStream>,
    /// This node's requests for another node's data, by id: the library's callback for each.
    asked: std::sync::Mutex<HashMap<u64, Asked>>,
    next: std::sync::atomic::AtomicU64,
}

/// A direct modex request of the library's, waiting for its answer.
struct Asked {
    cbfunc: ModexCallback,
    cbdata: *mut c_void,
}

// SAFETY: as Fence's.
unsafe impl Send for Asked {}

impl Link {
    /// Connects for node `here`; the link and the reading end of its connection.
    fn connect(
        server: &super::pmi::Coordinator,
        here: usize,
    ) -> std::io::Result<(Link, std::io::BufReader<std::net::TcpStream>)> {
        let stream = server.connect()?;
        let read = std::io::BufReader::new(stream.try_clone()?);
        let link = Link {
            write: std::sync::Mutex::new(stream),
            asked: std::sync::Mutex::new(HashMap::new()),
            next: std::sync::atomic::AtomicU64::new(0),
        };
        link.send(&format!("cmd=pmix_node node={here}\n"), &[])?;
        Ok((link, read))
    }

    /// One message: `line`, then `data`, in one write.
    fn send(&self, line: &str, data: &[u8]) -> std::io::Result<()> {
        let mut message = line.as_bytes().to_vec();
        message.extend_from_slice(data);
        let mut write = self.write.lock().map_err(|_| std::io::ErrorKind::Other)?;
        write.write_all(&message)
    }
}

/// Hands `data` to one of the library's modex callbacks (a fence's or a direct modex's),
/// kept alive until the library releases it.
fn give(cbfunc: ModexCallback, status: c_int, data: Vec<u8>, cbdata: *mut c_void) {
    let data = Box::new(data);
    let (ptr, len) = (data.as_ptr(), data.len());
    // SAFETY: the library's callback with its cbdata; the data stays alive until it calls
    // release_gathered with the box.
    unsafe {
        cbfunc(
            status,
            ptr.cast(),
            len,
            cbdata,
            Some(release_gathered),
            Box::into_raw(data).cast(),
        )
    };
}

/// Reads what the step's PMI server sends this node: fences' data (to `gathered`, for
/// `serve_fences`), other nodes' requests for a rank's data (asked of the library, answered
/// by `on_dmodex_data`), and the answers to this node's own requests (to the library). Once
/// the server is gone, the requests still waiting fail.
fn read_link(
    link: &'static Link,
    mut read: std::io::BufReader<std::net::TcpStream>,
    gathered: mpsc::Sender<Vec<u8>>,
    dmodex_request: DmodexRequest,
    nspace: &str,
) {
    loop {
        let mut line = String::new();
        if !matches!(read.read_line(&mut line), Ok(n) if n > 0) {
            break;
        }
        let f = super::pmi::fields(line.trim_end());
        let number = |name: &str| f.get(name).and_then(|v| v.parse::<i64>().ok());
        let mut data = vec![0u8; number("size").unwrap_or(0).max(0) as usize];
        if read.read_exact(&mut data).is_err() {
            break;
        }
        match (f.get("cmd").copied(), number("id")) {
            (Some("allgather_out"), _) => {
                let _ = gathered.send(data);
            }
            (Some("dmodex"), Some(id)) => {
                let proc_ = Proc::new(nspace, number("rank").unwrap_or(0) as u32);
                let cbdata = Box::into_raw(Box::new(id as u64)).cast();
                // SAFETY: the proc is read during the call; cbdata comes back once, to
                // on_dmodex_data, or not at all on an immediate failure.
                let status = unsafe { dmodex_request(&proc_, Some(on_dmodex_data), cbdata) };
                if status != PMIX_SUCCESS {
                    // SAFETY: not handed to the library after all.
                    drop(unsafe { Box::from_raw(cbdata.cast::<u64>()) });
                    let _ = link.send(
                        &format!("cmd=dmodex_out id={id} status={status} size=0\n"),
                        &[],
                    );
                }
            }
            (Some("dmodex_out"), Some(id)) => {
                let asked = link
                    .asked
                    .lock()
                    .ok()
                    .and_then(|mut a| a.remove(&(id as u64)));
                if let Some(asked) = asked {
                    let status = number("status").unwrap_or(-1) as c_int;
                    give(asked.cbfunc, status, data, asked.cbdata);
                }
            }
            _ => {}
        }
    }
    let waiting: Vec<Asked> = link
        .asked
        .lock()
        .map(|mut a| a.drain().map(|(_, asked)| asked).collect())
        .unwrap_or_default();
    for asked in waiting {
        give(asked.cbfunc, PMIX_ERROR, Vec::new(), asked.cbdata);
    }
}

type DmodexRequest = unsafe extern "C" fn(
    *const Proc,
    Option<unsafe extern "C" fn(c_int, *mut c_char, usize, *mut c_void)>,
    *mut c_void,
) -> c_int;

/// The library's answer to another node's request for one of this node's ranks' data.
unsafe extern "C" fn on_dmodex_data(
    status: c_int,
    data: *mut c_char,
    size: usize,
    cbdata: *mut c_void,
) {
    // SAFETY: the id boxed for this request in read_link.
    let id = *unsafe { Box::from_raw(cbdata.cast::<u64>()) };
    let data = match (data.is_null(), size) {
        (false, 1..) => {
            // SAFETY: the library's `size` bytes, alive for this call.
            unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) }
        }
        _ => &[],
    };
    if let Some(link) = UPCALLS.get().and_then(|u| u.link.as_ref()) {
        let line = format!(
            "cmd=dmodex_out id={id} status={status} size={}\n",
            data.len()
        );
        let _ = link.send(&line, data);
    }
}

unsafe extern "C" fn dmodex_upcall(
    proc_: *const Proc,
    _info: *const c_void,
    _ninfo: usize,
    cbfunc: Option<ModexCallback>,
    cbdata: *mut c_void,
) -> c_int {
    let (Some(up), Some(cbfunc)) = (UPCALLS.get(), cbfunc) else {
        return PMIX_ERROR;
    };
    let Some(link) = &up.link else {
        return PMIX_ERR_NOT_FOUND;
    };
    // SAFETY: the library's proc, alive for this call.
    let rank = unsafe { (*proc_).rank };
    let node = up.layout.node_of(rank);
    if rank >= up.layout.size() || node == up.layout.here {
        return PMIX_ERR_NOT_FOUND;
    }
    let id = link.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut asked) = link.asked.lock() {
        asked.insert(id, Asked { cbfunc, cbdata });
    }
    let line = format!("cmd=dmodex_req id={id} node={node} rank={rank}\n");
    if link.send(&line, &[]).is_err() {
        let _ = link.asked.lock().map(|mut a| a.remove(&id));
        return PMIX_ERROR;
    }
    PMIX_SUCCESS
}

/// The fences, one after another as every node meets them in the same order: this node's
/// data sent through `link` with the others', the gathered data (from `gathered`) handed to
/// the library.
fn serve_fences(
    fences: mpsc::Receiver<Fence>,
    here: usize,
    link: Option<&Link>,
    gathered: mpsc::Receiver<Vec<u8>>,
) {
    // Fences over the same nodes are told apart by their count.
    let mut seen: HashMap<Vec<usize>, u64> = HashMap::new();
    for fence in fences {
        let gathered = if fence.nodes == [here] {
            Ok(fence.data)
        } else {
            let count = seen.entry(fence.nodes.clone()).or_default();
            *count += 1;
            let nodes: Vec<String> = fence.nodes.iter().map(|n| n.to_string()).collect();
            let line = format!(
                "cmd=allgather key={}#{count} parts={} size={}\n",
                nodes.join(","),
                fence.nodes.len(),
                fence.data.len()
            );
            match link {
                None => Err("the step has no PMI server to gather it".to_string()),
                Some(link) => link
                    .send(&line, &fence.data)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        gathered
                            .recv()
                            .map_err(|_| "the step's PMI server went".to_string())
                    }),
            }
        };
        let Some(cbfunc) = fence.cbfunc else {
            continue;
        };
        match gathered {
            Ok(data) => give(cbfunc, PMIX_SUCCESS, data, fence.cbdata),
            Err(e) => {
                berth_core::say!("berth step: PMIx fence across the step's nodes: {e}");
                give(cbfunc, PMIX_ERROR, Vec::new(), fence.cbdata);
            }
        }
    }
}

/// This node's PMIx server for the step, in its helper process.
pub(super) struct Server {
    helper: libc::pid_t,
    /// Closed when the tasks have ended: the helper then finalizes and exits.
    link: Option<std::os::unix::net::UnixStream>,
    /// The host's directory of temporary files (held: this process may be in the
    /// container's mounts when it ends) and the name of the helper's directory in it.
    tmp: std::os::fd::OwnedFd,
    name: CString,
    /// Each local task's PMIx variables (`NAME=VALUE`).
    pub env: Vec<Vec<String>>,
}

impl Server {
    /// Forks the helper as `id` and waits until its server has the step's namespace and
    /// each task's variables. `coordinator`: the step's PMI server (fences across nodes,
    /// aborts). Must be called while this process is single-threaded and on the host.
    pub fn start(
        launch: &StepLaunch,
        id: &berth_runtime::Identity,
        coordinator: Option<super::pmi::Coordinator>,
    ) -> Result<Server, StepError> {
        // The server's own directory (its rendezvous files), the user's, named after the
        // job's container (its runner's pid and the job's id) and made by mkdtemp(3), so
        // that nobody can take its name first.
        let tmp_dir = std::env::temp_dir();
        let tmp: std::os::fd::OwnedFd = std::fs::File::open(&tmp_dir)
            .map_err(io_err(format!("opening {}", tmp_dir.display())))?
            .into();
        let template = tmp_dir.join(format!(
            "berth-pmix.{}.{}.{}.XXXXXX",
            launch.cgroup.replace('/', "_"),
            launch.step_id,
            launch.node_index
        ));
        let mut template = CString::new(template.into_os_string().into_encoded_bytes())
            .map_err(|e| StepError::Launch(e.to_string()))?
            .into_bytes_with_nul();
        // SAFETY: mkdtemp(3) fills in the NUL-terminated template it is given, in place.
        if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
            return Err(io_err(format!(
                "creating a directory in {}",
                tmp_dir.display()
            ))(std::io::Error::last_os_error()));
        }
        template.pop();
        let dir = std::path::PathBuf::from(std::ffi::OsString::from_vec(template));
        let name = CString::new(dir.file_name().expect("named").as_bytes()).expect("no NUL");
        let mut server = Server {
            helper: 0,
            link: None,
            tmp,
            name,
            env: Vec::new(),
        };
        std::os::unix::fs::chown(&dir, Some(id.uid), Some(id.gid)).map_err(io_err(format!(
            "giving {} to {}",
            dir.display(),
            id.user
        )))?;
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(io_err("creating the PMIx helper's socket"))?;
        let layout = Layout::of(launch);
        // SAFETY: this process is single-threaded: the child may run anything.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            drop(ours);
            let code = helper(layout, id, &dir, theirs, coordinator);
            // SAFETY: the child ends here without running the parent's exit handlers.
            unsafe { libc::_exit(code) };
        }
        drop(theirs);
        if pid < 0 {
            return Err(io_err("forking the PMIx helper")(
                std::io::Error::last_os_error(),
            ));
        }
        server.helper = pid;
        server.link = Some(ours);
        let mut line = String::new();
        let read =
            std::io::BufReader::new(server.link.as_ref().expect("linked")).read_line(&mut line);
        match read.map(|_| serde_json::from_str::<Result<Vec<Vec<String>>, String>>(&line)) {
            Ok(Ok(Ok(env))) if env.len() == launch.tasks.len() => {
                server.env = env;
                Ok(server)
            }
            Ok(Ok(Err(why))) => Err(StepError::Refused(why)),
            _ => Err(StepError::Refused(
                "--mpi=pmix: the PMIx helper ended before its server started".into(),
            )),
        }
    }
}

impl Drop for Server {
    /// Tells the helper to finalize and waits for it (killing it after a while); then its
    /// directory goes, if the helper has not removed it (empty: the library leaves nothing
    /// there with the helper's settings).
    fn drop(&mut self) {
        drop(self.link.take());
        if self.helper > 0 {
            reap(self.helper);
        }
        // SAFETY: unlinkat(2) of a name in a directory we hold.
        unsafe { libc::unlinkat(self.tmp.as_raw_fd(), self.name.as_ptr(), libc::AT_REMOVEDIR) };
    }
}

/// Waits for the helper, told to end (its link closed), and kills it if it has not ended
/// within 5 s.
fn reap(pid: libc::pid_t) {
    // (A pidfd is readable once its process has ended.)
    let within = Some(std::time::Duration::from_secs(5));
    let ended = berth_runtime::enter::pidfd(pid).is_ok_and(|fd| {
        crate::launcher::readable_within([fd.as_raw_fd()], within).is_ok_and(|[ended]| ended)
    });
    let mut status = 0;
    // SAFETY: kill (where it has not ended) and reap our own child.
    unsafe {
        if !ended {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
    }
}

/// The helper process: becomes the user, starts the server, says each task's variables on
/// `link` and serves until the step process closes it. Its exit status.
fn helper(
    layout: Layout,
    id: &berth_runtime::Identity,
    dir: &std::path::Path,
    link: std::os::unix::net::UnixStream,
    coordinator: Option<super::pmi::Coordinator>,
) -> c_int {
    let mut link = link;
    let started = super::become_user(id, "--mpi=pmix: the PMIx helper")
        .and_then(|()| serve(layout, id, dir, coordinator));
    let (lib, envs) = match started {
        Ok(started) => started,
        Err(why) => {
            let _ = writeln!(link, "{}", serde_json::json!({ "Err": why }));
            return 1;
        }
    };
    let said = writeln!(link, "{}", serde_json::json!({ "Ok": envs }));
    if said.is_ok() {
        // Until the step process closes its end (or dies).
        let _ = link.read(&mut [0u8; 1]);
    }
    // SAFETY: the server this process started.
    unsafe { (lib.server_finalize)() };
    // (Here, on the host: the step process may be in the container's mounts by now.)
    let _ = std::fs::remove_dir_all(dir);
    0
}

/// Starts the library's server with the step's namespace and this node's tasks; the
/// library and each local task's variables.
fn serve(
    layout: Layout,
    id: &berth_runtime::Identity,
    dir: &std::path::Path,
    coordinator: Option<super::pmi::Coordinator>,
) -> Result<(Library, Vec<Vec<String>>), String> {
    // Read by the library as it starts: its hash store (no shared-memory files) and plain
    // regular expressions; its directories the helper's own.
    std::env::set_var("PMIX_MCA_gds", "hash");
    std::env::set_var("PMIX_MCA_preg", "native");
    std::env::set_var("TMPDIR", dir);
    let lib = Library::load(LIBRARY)?;
    let dir_text = dir.to_string_lossy().into_owned();
    let (list, init) = info_array(
        &lib,
        &[
            ("pmix.srvr.tmpdir", Value::Str(dir_text.clone())),
            ("pmix.sys.tmpdir", Value::Str(dir_text)),
        ],
    )?;
    let module = Box::leak(Box::new(Module {
        client_connected: std::ptr::null(),
        client_finalized: std::ptr::null(),
        abort: Some(abort_upcall),
        fence_nb: Some(fence_upcall),
        direct_modex: Some(dmodex_upcall),
        rest: [std::ptr::null(); 23],
    }));
    let (fences_tx, fences) = mpsc::channel();
    let here = layout.here;
    let nspace_text = layout.nspace.clone();
    let nspace = CString::new(nspace_text.clone()).map_err(|e| e.to_string())?;
    let ranks = layout.ranks(here);
    // SAFETY: the module lives for the process; the info array as converted.
    let status = unsafe { (lib.server_init)(module, init.array, init.size) };
    // SAFETY: the list the array came from (the library copied what it keeps).
    unsafe { (lib.list_release)(list) };
    if status != PMIX_SUCCESS {
        return Err(lib.failed("starting the server", status));
    }
    // (Its regular expressions need the library started.)
    let infos = layout.infos(&lib)?;
    // A step on more than one node: the link to the others, through the step's PMI server.
    let (link, read) = match coordinator.as_ref().filter(|_| layout.nodes.len() > 1) {
        Some(server) => {
            let (link, read) = Link::connect(server, here).map_err(|e| {
                format!("PMIx: reaching the step's PMI server {}: {e}", server.addr)
            })?;
            (Some(link), Some(read))
        }
        None => (None, None),
    };
    let _ = UPCALLS.set(Upcalls {
        layout,
        fences: std::sync::Mutex::new(fences_tx),
        coordinator,
        link,
    });
    let up = UPCALLS.get().expect("set just above");
    let (gathered_tx, gathered) = mpsc::channel();
    if let (Some(link), Some(read)) = (up.link.as_ref(), read) {
        let (request, nspace) = (lib.dmodex_request, nspace_text.clone());
        std::thread::spawn(move || read_link(link, read, gathered_tx, request, &nspace));
    }
    std::thread::spawn(move || serve_fences(fences, here, up.link.as_ref(), gathered));
    let (list, info) = info_array(&lib, &infos)?;
    let done = Completion::new();
    // SAFETY: a NUL-terminated namespace and the info array, alive until the callback.
    let status = done.wait(|cb, cbdata| unsafe {
        (lib.register_nspace)(
            nspace.as_ptr(),
            ranks.len() as c_int,
            info.array,
            info.size,
            cb,
            cbdata,
        )
    });
    // SAFETY: as above.
    unsafe { (lib.list_release)(list) };
    if status != PMIX_SUCCESS {
        return Err(lib.failed("registering the step", status));
    }
    let mut envs = Vec::new();
    for rank in ranks {
        let proc_ = Proc::new(&nspace_text, rank);
        // SAFETY: the proc is alive until the callback.
        let status = done.wait(|cb, cbdata| unsafe {
            (lib.register_client)(&proc_, id.uid, id.gid, std::ptr::null_mut(), cb, cbdata)
        });
        if status != PMIX_SUCCESS {
            return Err(lib.failed(&format!("registering task {rank}"), status));
        }
        let mut env: *mut *mut c_char = std::ptr::null_mut();
        // SAFETY: setup_fork appends to a NULL-terminated array it allocates.
        let status = unsafe { (lib.setup_fork)(&proc_, &mut env) };
        if status != PMIX_SUCCESS {
            return Err(lib.failed(&format!("the variables of task {rank}"), status));
        }
        envs.push(take_env(env));
    }
    Ok((lib, envs))
}

/// The strings of a NULL-terminated array the library malloc'd, freed.
fn take_env(env: *mut *mut c_char) -> Vec<String> {
    let mut out = Vec::new();
    if env.is_null() {
        return out;
    }
    let mut i = 0;
    loop {
        // SAFETY: walking a NULL-terminated array of malloc'd strings, freeing each.
        let entry = unsafe { *env.add(i) };
        if entry.is_null() {
            break;
        }
        // SAFETY: as above.
        out.push(
            unsafe { CStr::from_ptr(entry) }
                .to_string_lossy()
                .into_owned(),
        );
        // SAFETY: as above.
        unsafe { libc::free(entry.cast()) };
        i += 1;
    }
    // SAFETY: the array itself.
    unsafe { libc::free(env.cast()) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(counts: &[u32], here: usize) -> Layout {
        Layout {
            nspace: "berth.7.1".into(),
            nodes: counts
                .iter()
                .enumerate()
                .map(|(i, &n)| (format!("n{i}"), n))
                .collect(),
            here,
        }
    }

    #[test]
    fn a_node_without_the_library_says_what_to_install() {
        let e = Library::load("libpmix-absent.so.2")
            .err()
            .expect("no such library");
        assert!(
            e.starts_with("--mpi=pmix: this node has no PMIx library (libpmix-absent.so.2: ")
                && e.ends_with("install it (Debian: libpmix2) or use --mpi=pmi2"),
            "{e}"
        );
        // Another library is no PMIx: what it lacks is said.
        let e = Library::load("libc.so.6").err().expect("libc is no PMIx");
        assert!(e.contains("libc.so.6 has no PMIx_server_init"), "{e}");
    }

    #[test]
    fn ranks_and_peers_follow_the_nodes() {
        let l = layout(&[2, 3, 1], 1);
        assert_eq!(l.size(), 6);
        assert_eq!(l.ranks(1), 2..5);
        assert_eq!(l.peers(1), "2,3,4");
        assert_eq!(l.node_of(4), 1);
        assert_eq!(l.node_of(5), 2);
    }

    #[test]
    fn a_fence_takes_the_nodes_of_its_ranks() {
        let l = layout(&[2, 3, 1], 0);
        let ns = |r| ("berth.7.1".to_string(), r);
        assert_eq!(l.fence_nodes(&[ns(PMIX_RANK_WILDCARD)]), vec![0, 1, 2]);
        assert_eq!(l.fence_nodes(&[ns(0), ns(3), ns(4)]), vec![0, 1]);
        assert_eq!(l.fence_nodes(&[("other".into(), 0)]), vec![0, 1, 2]);
        assert_eq!(l.fence_nodes(&[]), vec![0, 1, 2]);
    }

    #[test]
    fn procs_carry_their_namespace_nul_terminated() {
        let p = Proc::new("berth.7.1", 3);
        assert_eq!(std::mem::size_of::<Proc>(), 260);
        // SAFETY: the array is NUL-terminated by construction.
        let ns = unsafe { CStr::from_ptr(p.nspace.as_ptr()) };
        assert_eq!(ns.to_str().unwrap(), "berth.7.1");
        assert_eq!(std::mem::size_of::<Module>(), 28 * 8);
        assert_eq!(std::mem::offset_of!(Module, direct_modex), 4 * 8);
    }
}
