package mqtt

// Who may do what on the local broker. Three kinds of client:
//   - the agent itself, with a login made fresh at every start (its user
//     name holds a ':', which no password file line can): everything;
//   - users of the password file, with a role: RoleCommand may publish
//     this device's command topics (<prefix>/<device>/cmd/...), RoleRead
//     (the default) may not; neither may publish anything else under
//     <prefix>/ (no forged status or telemetry); both may subscribe to
//     anything and publish outside <prefix>/ (Home Assistant's birth
//     message, other programs' own topics);
//   - anonymous clients: with no password file, on loopback (or with
//     allow_anonymous), they are the open broker of old and may publish
//     anything; beside a password file, allow_anonymous lets them in
//     read-only.
//
// A will counts as a publish: a CONNECT whose will the user may not
// publish is refused.

import (
	"crypto/subtle"
	"strings"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// Role is what a local broker user may do.
type Role string

// The roles of LocalOptions.Roles.
const (
	// RoleRead subscribes to anything but publishes no command.
	RoleRead Role = "read"
	// RoleCommand may also publish the device's command topics.
	RoleCommand Role = "command"
)

// agentUser is the agent's own login: a ':' cannot be in a password file's
// user name, so no file entry can claim it.
const agentUser = "edge-agent:self"

type brokerAuth struct {
	mochi.HookBase
	users     Users // nil: no password file
	roles     map[string]Role
	anonymous bool // clients without a login may connect
	agentPW   []byte
	cmdPrefix string // <prefix>/<device>/cmd/
	ownPrefix string // <prefix>/
}

func (h *brokerAuth) ID() string { return "edge-agent-auth" }

func (h *brokerAuth) Provides(b byte) bool {
	return b == mochi.OnConnectAuthenticate || b == mochi.OnACLCheck
}

func (h *brokerAuth) OnConnectAuthenticate(cl *mochi.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	var ok bool
	switch {
	case user == agentUser:
		ok = subtle.ConstantTimeCompare(pk.Connect.Password, h.agentPW) == 1
	case user == "" || h.users == nil:
		ok = h.anonymous
	default:
		ok = h.users.Check(user, pk.Connect.Password)
	}
	// mochi publishes a will without asking OnACLCheck: a will on a topic
	// the user may not publish (a command, a forged status) would be one
	// abrupt disconnect away. Such a CONNECT is refused.
	return ok && (!pk.Connect.WillFlag || h.mayPublish(user, pk.Connect.WillTopic))
}

// role of a user; "" (anything) for the agent itself and on the open
// broker.
func (h *brokerAuth) role(user string) Role {
	switch {
	case user == agentUser, h.users == nil:
		return ""
	case user == "":
		return RoleRead
	case h.roles[user] == RoleCommand:
		return RoleCommand
	}
	return RoleRead
}

func (h *brokerAuth) mayPublish(user, topic string) bool {
	switch h.role(user) {
	case "":
		return true
	case RoleCommand:
		return strings.HasPrefix(topic, h.cmdPrefix) || !strings.HasPrefix(topic, h.ownPrefix)
	}
	return !strings.HasPrefix(topic, h.ownPrefix)
}

func (h *brokerAuth) OnACLCheck(cl *mochi.Client, topic string, write bool) bool {
	return !write || h.mayPublish(string(cl.Properties.Username), topic)
}
