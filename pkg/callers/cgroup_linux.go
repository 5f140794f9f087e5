package callers

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// Layout is how this host mounts cgroups, which decides what a socket's
// cgroup id can tell.
type Layout struct {
	// Mode is "v2" (unified: /sys/fs/cgroup is cgroup2), "hybrid" (v1
	// controllers plus systemd's cgroup2 mirror at /sys/fs/cgroup/unified) or
	// "v1" (legacy: no cgroup2 mount).
	Mode string
	// Root is where the cgroup2 hierarchy is mounted; "" for v1.
	Root string
}

// Units reports whether callers can be told apart by systemd unit here. On a
// v1 host every socket reports the root cgroup, so only the uid is usable.
func (l Layout) Units() bool { return l.Root != "" }

// Describe says in a sentence what this layout allows, for `imds-shim check`.
func (l Layout) Describe() string {
	switch l.Mode {
	case "v2":
		return "cgroup v2 (" + l.Root + "): callers are matched by uid, group and systemd unit"
	case "hybrid":
		return "cgroup hybrid (systemd's cgroup2 mirror at " + l.Root + "): callers are matched by uid, group and systemd unit"
	default:
		return "cgroup v1 only (legacy): every socket reports the root cgroup, so callers are matched by uid and group only; `units` entries match nothing"
	}
}

// The places systemd mounts the cgroup2 hierarchy.
const (
	cgroupV2Root     = "/sys/fs/cgroup"
	cgroupHybridRoot = "/sys/fs/cgroup/unified"
)

// DetectLayout finds the cgroup2 hierarchy where systemd mounts it.
func DetectLayout() Layout {
	return detectLayout(cgroupV2Root, cgroupHybridRoot)
}

func detectLayout(v2, hybrid string) Layout {
	if isCgroup2(v2) {
		return Layout{Mode: "v2", Root: v2}
	}
	if isCgroup2(hybrid) {
		return Layout{Mode: "hybrid", Root: hybrid}
	}
	return Layout{Mode: "v1"}
}

func isCgroup2(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC
}

// rootCgroupID is the id of a hierarchy's root cgroup (its directory's inode
// number), which is also what every socket reports on a v1-only host.
const rootCgroupID = 1

// maxCgroups bounds the cgroup cache and each walk of the hierarchy. A
// user's delegated subtree (user@UID.service) lets an unprivileged user
// create cgroups; beyond this many the walk stops and callers in the cgroups
// it did not reach are unidentified.
const maxCgroups = 1 << 16

// cgroupResolver maps cgroup ids to paths. A cgroup id is the inode number of
// the cgroup's directory in the cgroup2 hierarchy, so a walk that reads every
// directory builds the map (open_by_handle_at would find one directly, but it
// needs CAP_DAC_READ_SEARCH and the unit's system-call filter blocks it). The
// map is kept and walked again only on a miss: a restarted unit gets a new
// cgroup, hence a new id.
//
// Walks come in two depths, because part of the tree belongs to users. Below
// a unit (user@UID.service, a Delegate=yes service) whoever runs in it may
// create cgroups, as many as they like, and each new one a caller connects
// from is a miss. So a miss first walks only down to the units (slices and
// units: the system manager's tree, cheap and out of users' reach), which
// finds every system unit and container scope, restarted or not; only an id
// that is not there is looked for in the units' subtrees. The two walks have
// separate locks: a user who forces deep walks one after another delays only
// callers that live deep in some unit's subtree, never a restarted service.
// Each walk is serialised with others of its depth, and a caller that missed
// re-checks the maps after waiting, so one walk serves everyone who waited.
type cgroupResolver struct {
	root string

	shallowMu, deepMu sync.Mutex // each held for a whole walk of its depth

	mu                  sync.RWMutex
	shallow, deep       map[uint64]string
	shallowWks, deepWks int // walks run, for tests
}

var errCgroupUnknown = errors.New("cgroup not found in the hierarchy")

func (r *cgroupResolver) path(id uint64) (string, error) {
	if id == rootCgroupID {
		return "/", nil
	}
	if p, ok := r.cached(id); ok {
		return p, nil
	}
	if p, err := r.walk(id, false); err == nil {
		return p, nil
	}
	return r.walk(id, true)
}

func (r *cgroupResolver) walk(id uint64, deep bool) (string, error) {
	mu := &r.shallowMu
	if deep {
		mu = &r.deepMu
	}
	mu.Lock()
	defer mu.Unlock()
	if p, ok := r.cached(id); ok {
		return p, nil // found by the walk this call waited for
	}
	paths, err := walkCgroups(r.root, deep)
	r.mu.Lock()
	if err == nil || len(paths) > 0 {
		if deep {
			r.deep = paths
		} else {
			r.shallow = paths
		}
	}
	if deep {
		r.deepWks++
	} else {
		r.shallowWks++
	}
	r.mu.Unlock()
	if p, ok := paths[id]; ok {
		return p, nil
	}
	if err != nil {
		return "", err
	}
	return "", errCgroupUnknown
}

func (r *cgroupResolver) cached(id uint64) (string, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if p, ok := r.shallow[id]; ok {
		return p, true
	}
	p, ok := r.deep[id]
	return p, ok
}

// walkCgroups maps the inode number of every directory under root to its
// path relative to root ("/system.slice/backup.service"). It reads each
// directory with getdents64, whose records carry the inode number and type,
// so it never stats: a cgroup directory holds dozens of files, and stat-ing
// through os.ReadDir cost three times as much (27 against 9 µs per cgroup
// under load here).
// Directories that vanish during the walk (a unit stopping) are skipped, and
// so are unreadable ones: callers in them stay unidentified.
//
// A shallow walk does not descend into units (*.service, *.scope): see
// cgroupResolver.
func walkCgroups(root string, deep bool) (map[uint64]string, error) {
	fd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("walking %s: %w", root, err)
	}
	var st unix.Stat_t
	err = unix.Fstat(fd, &st)
	unix.Close(fd)
	if err != nil {
		return nil, fmt.Errorf("walking %s: %w", root, err)
	}
	paths := map[uint64]string{st.Ino: "/"}
	buf := make([]byte, 32<<10)
	stack := []string{""}
	for len(stack) > 0 {
		rel := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		fd, err := unix.Open(root+rel, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		for {
			n, err := unix.Getdents(fd, buf)
			if err != nil && errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || n <= 0 {
				break
			}
			for b := buf[:n]; len(b) >= 19; {
				ino := binary.NativeEndian.Uint64(b[0:])
				reclen := int(binary.NativeEndian.Uint16(b[16:]))
				typ := b[18]
				if reclen < 19 || reclen > len(b) {
					break
				}
				name := b[19:reclen]
				if i := bytes.IndexByte(name, 0); i >= 0 {
					name = name[:i]
				}
				b = b[reclen:]
				if typ != unix.DT_DIR || string(name) == "." || string(name) == ".." {
					continue
				}
				if len(paths) >= maxCgroups {
					unix.Close(fd)
					return paths, fmt.Errorf("walking %s: more than %d cgroups", root, maxCgroups)
				}
				p := rel + "/" + string(name)
				paths[ino] = p
				if deep || !isUnitName(name) {
					stack = append(stack, p)
				}
			}
		}
		unix.Close(fd)
	}
	return paths, nil
}

func isUnitName(name []byte) bool {
	return bytes.HasSuffix(name, []byte(".service")) || bytes.HasSuffix(name, []byte(".scope"))
}
