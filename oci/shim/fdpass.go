package shim

import (
	"errors"
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// maxFDMessage bounds a request sent with file descriptors.
const maxFDMessage = 64 << 10

// SendFDs writes msg and, in the same message, the descriptors fds.
func SendFDs(conn *net.UnixConn, msg []byte, fds []int) error {
	n, oobn, err := conn.WriteMsgUnix(msg, unix.UnixRights(fds...), nil)
	if err != nil {
		return err
	}
	if n != len(msg) || oobn == 0 && len(fds) > 0 {
		return errors.New("short write of a descriptor message")
	}
	return nil
}

// RecvFDs reads one message and the descriptors that came with it, which
// the caller owns (and must close).
func RecvFDs(conn *net.UnixConn) ([]byte, []*os.File, error) {
	buf := make([]byte, maxFDMessage)
	oob := make([]byte, unix.CmsgSpace(8*4))
	n, oobn, _, _, err := conn.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	files, err := parseRights(oob[:oobn])
	if err != nil {
		return nil, nil, err
	}
	return buf[:n], files, nil
}

// RecvConsole receives the pty master runc's init sends over the console
// socket (the file name as data, the descriptor as rights).
func RecvConsole(sock *os.File) (*os.File, error) {
	name := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		_, oobn, _, _, err := unix.Recvmsg(int(sock.Fd()), name, oob, unix.MSG_CMSG_CLOEXEC)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive console: %w", err)
		}
		files, err := parseRights(oob[:oobn])
		if err != nil {
			return nil, err
		}
		if len(files) != 1 {
			closeFiles(files, nil)
			return nil, fmt.Errorf("receive console: %d descriptors", len(files))
		}
		return files[0], nil
	}
}

func parseRights(oob []byte) ([]*os.File, error) {
	scms, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, err
	}
	var files []*os.File
	for _, scm := range scms {
		fds, err := unix.ParseUnixRights(&scm)
		if err != nil {
			closeFiles(files, nil)
			return nil, err
		}
		for _, fd := range fds {
			unix.CloseOnExec(fd)
			files = append(files, os.NewFile(uintptr(fd), "passed"))
		}
	}
	return files, nil
}

func closeFiles(a, b []*os.File) {
	for _, f := range append(a, b...) {
		f.Close()
	}
}

// SockPair is a connected pair of Unix stream sockets, both close-on-exec:
// one end stays, the other goes to a process that sends descriptors on it
// (runc's init, the pty master).
func SockPair(name string) (parent, child *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	return os.NewFile(uintptr(fds[1]), name+"-p"), os.NewFile(uintptr(fds[0]), name+"-c"), nil
}
