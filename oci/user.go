package oci

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/containerd/errdefs"
	securejoin "github.com/cyphar/filepath-securejoin"
	"github.com/moby/sys/user"
	"github.com/opencontainers/runtime-spec/specs-go"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// maxUserFile bounds what is read of an image's etc/passwd or etc/group:
// real ones are kilobytes, and the image is not trusted.
const maxUserFile = 10 << 20

// userDB is an image's etc/passwd and etc/group; a file the image lacks
// is empty.
type userDB struct {
	users  []user.User
	groups []user.Group
}

// processUser resolves the container's user the way containerd does: the
// security context's user (and group) win over the image's USER, names are
// looked up in the image, a numeric uid need not exist there (its gid is
// then 0), and the additional gids always hold the primary one.
func processUser(rootfs string, sc *runtimeapi.LinuxContainerSecurityContext, imageUser string) (specs.User, error) {
	userstr, err := userString(sc, imageUser)
	if err != nil {
		return specs.User{}, err
	}
	db, err := readUserDB(rootfs)
	if err != nil {
		return specs.User{}, err
	}
	uid, gid, name, err := db.resolve(userstr)
	if err != nil {
		return specs.User{}, err
	}
	gids, err := additionalGids(sc, db, name, gid)
	if err != nil {
		return specs.User{}, err
	}
	return specs.User{UID: uid, GID: gid, AdditionalGids: gids}, nil
}

// userString is the user in the image's USER syntax: user[:group].
func userString(sc *runtimeapi.LinuxContainerSecurityContext, imageUser string) (string, error) {
	var userstr string
	switch {
	case sc.GetRunAsUsername() != "":
		userstr = sc.GetRunAsUsername()
	case sc.GetRunAsUser() != nil:
		userstr = strconv.FormatInt(sc.GetRunAsUser().GetValue(), 10)
	}
	if g := sc.GetRunAsGroup(); g != nil {
		// critest expects this refused: a group alone would silently pair
		// with whatever user the image names.
		if userstr == "" {
			return "", fmt.Errorf("run_as_group %d is set without run_as_user or run_as_username: %w", g.GetValue(), errdefs.ErrInvalidArgument)
		}
		return userstr + ":" + strconv.FormatInt(g.GetValue(), 10), nil
	}
	if userstr == "" {
		return imageUser, nil
	}
	return userstr, nil
}

// resolve returns the uid and primary gid userstr names, and the user's
// name in the image ("" for a uid the image does not define).
func (db *userDB) resolve(userstr string) (uid, gid uint32, name string, err error) {
	if userstr == "" {
		userstr = "0"
	}
	parts := strings.Split(userstr, ":")
	if len(parts) > 2 {
		return 0, 0, "", fmt.Errorf("user %q: want user[:group]: %w", userstr, errdefs.ErrInvalidArgument)
	}
	u, found, err := db.lookupUser(parts[0])
	if err != nil {
		return 0, 0, "", err
	}
	uid, gid, name = uint32(u.Uid), 0, u.Name
	if found {
		gid = uint32(u.Gid)
	}
	if len(parts) == 2 {
		if gid, err = db.lookupGroup(parts[1]); err != nil {
			return 0, 0, "", err
		}
	}
	return uid, gid, name, nil
}

// lookupUser finds a user by uid or name. A uid the image does not define
// is still a user (found is false); a name it does not define is not.
func (db *userDB) lookupUser(s string) (u user.User, found bool, err error) {
	id, numeric, err := parseID(s, "user")
	if err != nil {
		return user.User{}, false, err
	}
	for _, e := range db.users {
		if numeric && e.Uid == id || !numeric && e.Name == s {
			return e, true, nil
		}
	}
	if numeric {
		return user.User{Uid: id}, false, nil
	}
	return user.User{}, false, fmt.Errorf("user %q is not in the image's /etc/passwd: %w", s, errdefs.ErrNotFound)
}

func (db *userDB) lookupGroup(s string) (uint32, error) {
	id, numeric, err := parseID(s, "group")
	if err != nil || numeric {
		return uint32(id), err
	}
	for _, g := range db.groups {
		if g.Name == s {
			return uint32(g.Gid), nil
		}
	}
	return 0, fmt.Errorf("group %q is not in the image's /etc/group: %w", s, errdefs.ErrNotFound)
}

// parseID tells a numeric id from a name. runc takes ids up to MaxInt32
// only, so containerd refuses larger ones, and so does ketch.
func parseID(s, what string) (id int, numeric bool, err error) {
	if s == "" {
		return 0, false, fmt.Errorf("empty %s name: %w", what, errdefs.ErrInvalidArgument)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if errors.Is(err, strconv.ErrRange) || err == nil && (n < 0 || n > math.MaxInt32) {
		return 0, false, fmt.Errorf("%s id %s is outside [0, %d]: %w", what, s, math.MaxInt32, errdefs.ErrInvalidArgument)
	}
	if err != nil {
		return 0, false, nil
	}
	return int(n), true, nil
}

// additionalGids follows SupplementalGroupsPolicy: Merge (the default) adds
// the groups the image's /etc/group makes the user a member of, Strict only
// the config's. The result is sorted, as containerd sorts it, so `id -G`
// gives what critest expects.
func additionalGids(sc *runtimeapi.LinuxContainerSecurityContext, db *userDB, name string, primary uint32) ([]uint32, error) {
	gids := []uint32{primary}
	for _, g := range sc.GetSupplementalGroups() {
		if g < 0 || g > math.MaxInt32 {
			return nil, fmt.Errorf("supplemental_groups: gid %d is outside [0, %d]: %w", g, math.MaxInt32, errdefs.ErrInvalidArgument)
		}
		gids = append(gids, uint32(g))
	}
	switch sc.GetSupplementalGroupsPolicy() {
	case runtimeapi.SupplementalGroupsPolicy_Merge:
		if name != "" {
			gids = append(gids, db.memberOf(name)...)
		}
	case runtimeapi.SupplementalGroupsPolicy_Strict:
	default:
		return nil, fmt.Errorf("supplemental_groups_policy %d: %w", sc.GetSupplementalGroupsPolicy(), errdefs.ErrInvalidArgument)
	}
	slices.Sort(gids)
	return slices.Compact(gids), nil
}

// memberOf lists the groups whose member list names the user. A group named
// like the user is its own group, not a supplementary one (containerd
// skips it too).
func (db *userDB) memberOf(name string) []uint32 {
	var gids []uint32
	for _, g := range db.groups {
		if g.Name != name && slices.Contains(g.List, name) {
			gids = append(gids, uint32(g.Gid))
		}
	}
	return gids
}

func readUserDB(rootfs string) (*userDB, error) {
	var db userDB
	data, err := readRootfsFile(rootfs, "etc/passwd")
	if err != nil {
		return nil, err
	}
	if db.users, err = user.ParsePasswd(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("image's /etc/passwd: %w", err)
	}
	if data, err = readRootfsFile(rootfs, "etc/group"); err != nil {
		return nil, err
	}
	if db.groups, err = user.ParseGroup(bytes.NewReader(data)); err != nil {
		return nil, fmt.Errorf("image's /etc/group: %w", err)
	}
	return &db, nil
}

// readRootfsFile reads a file of the image as the container would see it:
// symlinks resolve inside the rootfs, never to the host's files, and a
// FIFO or device planted there cannot block or feed ketch. A missing file
// reads as empty.
func readRootfsFile(rootfs, name string) ([]byte, error) {
	resolved, err := securejoin.SecureJoin(rootfs, name)
	if err != nil {
		return nil, fmt.Errorf("image's /%s: %w", name, err)
	}
	rel, err := filepath.Rel(rootfs, resolved)
	if err != nil {
		return nil, fmt.Errorf("image's /%s: %w", name, err)
	}
	root, err := os.OpenRoot(rootfs)
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	defer root.Close()
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("image's /%s: %w", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("image's /%s is not a regular file: %w", name, errdefs.ErrInvalidArgument)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxUserFile+1))
	if err != nil {
		return nil, fmt.Errorf("image's /%s: %w", name, err)
	}
	if len(data) > maxUserFile {
		return nil, fmt.Errorf("image's /%s is over %d bytes: %w", name, maxUserFile, errdefs.ErrInvalidArgument)
	}
	return data, nil
}
