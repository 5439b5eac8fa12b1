// Package ctxio makes long reads stop when their context is cancelled.
package ctxio

import (
	"context"
	"io"
)

// Reader reads from R until Ctx is cancelled: each Read checks it first,
// so a copy stops within one read of an interrupt.
type Reader struct {
	Ctx context.Context
	R   io.Reader
}

func (r Reader) Read(p []byte) (int, error) {
	if err := r.Ctx.Err(); err != nil {
		return 0, err
	}
	return r.R.Read(p)
}
