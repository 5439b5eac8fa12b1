// Package base acquires the Raspberry Pi OS base image: it downloads it
// (resumably, with retries), verifies its SHA-256, keeps it in a
// content-addressed cache, and decompresses .xz files once, block-parallel,
// into a sparse raw image.
//
// This package is internal to pibake and not a stable API.
package base
