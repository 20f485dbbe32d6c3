package streaming

import (
	"context"
	"errors"
	"net"
)

// watchedListener hands out connections that tell when they end.
type watchedListener struct{ net.Listener }

func (l watchedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	gone, cancel := context.WithCancel(context.Background())
	return &watchedConn{Conn: c, gone: gone, cancel: cancel}, nil
}

// watchedConn's gone ends once a read fails (the client closed or reset
// the connection) or it is closed.
type watchedConn struct {
	net.Conn
	gone   context.Context
	cancel context.CancelFunc
}

func (c *watchedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil && !isTimeout(err) {
		c.cancel()
	}
	return n, err
}

func (c *watchedConn) Close() error {
	c.cancel()
	return c.Conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
