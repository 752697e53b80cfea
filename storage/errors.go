package storage

import "errors"

// Errors returned by the store. Match them with errors.Is.
var (
	// ErrSchemaTooNew: the file was written by a newer edge-agent. It is
	// refused and left untouched.
	ErrSchemaTooNew = errors.New("state file written by a newer schema")
	// ErrLocked: another process holds the file lock past the timeout.
	ErrLocked = errors.New("state file is locked by another process")
	// ErrCorrupt: the file or a record failed verification.
	ErrCorrupt = errors.New("state file is corrupt")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("store is closed")
	// ErrNotFound: the record a change needs is not stored.
	ErrNotFound = errors.New("not stored")
)
