package sign

import (
	"bufio"
	"bytes"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// TerminalPrompt asks on the controlling terminal (/dev/tty, as ssh and
// ssh-add do: stdin and stdout may be pipes in a script) with echo off,
// and restores the terminal after. It does what golang.org/x/term's
// ReadPassword does (term_unix.go: clear ECHO, keep ICANON, ISIG and
// ICRNL), over golang.org/x/sys/unix, which pibake links already.
func TerminalPrompt(question string) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, ErrNoTerminal
	}
	defer tty.Close()
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, ErrNoTerminal
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, fmt.Errorf("turn off echo: %w", err)
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(tty, question)
	line, err := bufio.NewReader(tty).ReadBytes('\n')
	fmt.Fprintln(tty)
	if err != nil {
		return nil, fmt.Errorf("read passphrase: %w", err)
	}
	return bytes.TrimRight(line, "\r\n"), nil
}
