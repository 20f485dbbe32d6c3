package reaper

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Counts are what ketch-init tells the runtime about its work: orphans it
// reaped (zombies nobody else would have collected) and signals it passed
// on to the entrypoint's process group.
type Counts struct {
	Reaped    uint64
	Forwarded uint64
}

// countsFormat is fixed-width, so that each write replaces the whole
// previous text in place and a reader never needs more than one read.
const countsFormat = "reaped %20d forwarded %20d\n"

// CountsSize is the length of the text a counts file holds.
var CountsSize = len(fmt.Sprintf(countsFormat, 0, 0))

// publish writes c at the start of f, if there is an f. It is best effort:
// the counts are for the operator's metrics, never a reason to stop.
func (c Counts) publish(f *os.File) {
	if f != nil {
		_, _ = f.WriteAt(fmt.Appendf(nil, countsFormat, c.Reaped, c.Forwarded), 0)
	}
}

// ParseCounts reads the text a counts file holds. A file ketch-init has
// not written to yet (empty) is zero counts.
func ParseCounts(b []byte) (Counts, error) {
	var c Counts
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return c, nil
	}
	if len(f) != 4 || f[0] != "reaped" || f[2] != "forwarded" {
		return c, fmt.Errorf("counts %q: not what ketch-init writes", b)
	}
	var err error
	if c.Reaped, err = strconv.ParseUint(f[1], 10, 64); err != nil {
		return c, fmt.Errorf("counts %q: %w", b, err)
	}
	if c.Forwarded, err = strconv.ParseUint(f[3], 10, 64); err != nil {
		return c, fmt.Errorf("counts %q: %w", b, err)
	}
	return c, nil
}
