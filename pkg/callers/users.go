package callers

import (
	"os"
	"os/user"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// userDB answers "what is uid N called, and what is its primary group" from
// os/user (which, in imds-shim's CGO_ENABLED=0 build, reads /etc/passwd and
// /etc/group; users that exist only through NSS modules, such as systemd's
// DynamicUser=, have no entry there). Reading the files on every connection
// would cost far more than identifying it, so answers are cached and the
// cache is dropped when either file changes (its size, mtime or inode),
// checked at most once per recheck interval.
type userDB struct {
	files   []string
	recheck time.Duration
	now     func() time.Time

	mu        sync.Mutex
	checked   time.Time
	stamp     []fileStamp
	byUID     map[uint32]userInfo
	lookupUID func(string) (*user.User, error)
	lookupGID func(string) (*user.Group, error)
}

type userInfo struct {
	name   string
	gid    uint32
	hasGID bool
	group  string
}

type fileStamp struct {
	size  int64
	mtime time.Time
	ino   uint64
	ok    bool
}

// maxUsers bounds the cache; a host has far fewer uids that make
// connections, and past it the cache starts over.
const maxUsers = 4096

func newUserDB() *userDB {
	return &userDB{
		files:     []string{"/etc/passwd", "/etc/group"},
		recheck:   time.Second,
		now:       time.Now,
		lookupUID: user.LookupId,
		lookupGID: user.LookupGroupId,
	}
}

func (u *userDB) lookup(uid uint32) userInfo {
	u.mu.Lock()
	defer u.mu.Unlock()
	if now := u.now(); u.byUID == nil || now.Sub(u.checked) >= u.recheck || now.Before(u.checked) {
		u.checked = now
		st := stampFiles(u.files)
		if u.byUID == nil || !equalStamps(st, u.stamp) {
			u.stamp = st
			u.byUID = make(map[uint32]userInfo)
		}
	}
	if ui, ok := u.byUID[uid]; ok {
		return ui
	}
	var ui userInfo
	if usr, err := u.lookupUID(strconv.FormatUint(uint64(uid), 10)); err == nil {
		ui.name = usr.Username
		if g, err := strconv.ParseUint(usr.Gid, 10, 32); err == nil {
			ui.gid, ui.hasGID = uint32(g), true
			if grp, err := u.lookupGID(usr.Gid); err == nil {
				ui.group = grp.Name
			}
		}
	}
	if len(u.byUID) >= maxUsers {
		clear(u.byUID)
	}
	u.byUID[uid] = ui
	return ui
}

func stampFiles(files []string) []fileStamp {
	st := make([]fileStamp, len(files))
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		st[i] = fileStamp{size: fi.Size(), mtime: fi.ModTime(), ino: inodeOf(fi), ok: true}
	}
	return st
}

func equalStamps(a, b []fileStamp) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].size != b[i].size || !a[i].mtime.Equal(b[i].mtime) || a[i].ino != b[i].ino || a[i].ok != b[i].ok {
			return false
		}
	}
	return true
}

func inodeOf(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
