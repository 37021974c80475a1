package storage

import (
	"io"
	"os"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Permissions of what the store creates on the operating system's file
// system: the log and the snapshots hold the replicated state, readable by
// the owner only whatever the process umask.
const (
	dirPerm  os.FileMode = 0o700
	filePerm os.FileMode = 0o600
)

// privateFS is the operating system's file system (vfs.Default) creating
// directories 0700 and files 0600. Files are created by the wrapped FS and
// then restricted; NB: their directory is already 0700 by then.
type privateFS struct{ vfs.FS }

func restrict(name string, f vfs.File, err error) (vfs.File, error) {
	if err != nil {
		return f, err
	}
	if err := os.Chmod(name, filePerm); err != nil {
		_ = f.Close()
		return nil, err
	}
	return f, nil
}

func (fs privateFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.Create(name, c)
	return restrict(name, f, err)
}

func (fs privateFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	f, err := fs.FS.OpenReadWrite(name, c, opts...)
	return restrict(name, f, err)
}

func (fs privateFS) ReuseForWrite(oldname, newname string, c vfs.DiskWriteCategory) (vfs.File, error) {
	f, err := fs.FS.ReuseForWrite(oldname, newname, c)
	return restrict(newname, f, err)
}

func (fs privateFS) Lock(name string) (io.Closer, error) {
	l, err := fs.FS.Lock(name)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(name, filePerm); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

func (fs privateFS) MkdirAll(dir string, _ os.FileMode) error { return fs.FS.MkdirAll(dir, dirPerm) }

func (fs privateFS) Unwrap() vfs.FS { return fs.FS }
