package agent

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/edge-agent/edge-agent/agent/infer"
	"github.com/edge-agent/edge-agent/mqtt"
	"github.com/edge-agent/edge-agent/power"
	"github.com/edge-agent/edge-agent/tflite"
)

// Config is the agent's configuration file (TOML). Every field has a
// default, so an absent file is a valid configuration.
type Config struct {
	// StateDir holds the agent's state and the generated demo model.
	// Default: $STATE_DIRECTORY (set by systemd) or ./state.
	StateDir string `toml:"state_dir"`
	// LogLevel is debug, info, warn or error. Default info.
	LogLevel string `toml:"log_level"`
	// ModelsDir is scanned for *.tflite files, each registered under its
	// file name without the extension.
	ModelsDir string `toml:"models_dir"`
	// Pool sizes the interpreter pool.
	Pool PoolConfig `toml:"pool"`
	// Models lists models explicitly; they take precedence over ModelsDir.
	// With neither, a generated demo model is used.
	Models []ModelConfig `toml:"models"`
	// Delegates are accelerator delegate libraries models may name.
	Delegates []DelegateConfig `toml:"delegates"`
	// State tunes the state file.
	State StateConfig `toml:"state"`
	// Calibration tunes how models are measured on first start.
	Calibration CalibrationConfig `toml:"calibration"`
	// MQTT connects the agent to its fleet; without brokers it runs alone
	// and telemetry waits in the outbox.
	MQTT MQTTConfig `toml:"mqtt"`
	// Power is the energy policy that decides how much to prewarm.
	Power PowerConfig `toml:"power"`
	// Prewarm tunes wake sources and trimming.
	Prewarm PrewarmConfig `toml:"prewarm"`
	// Families serve a fast variant while the precise one warms.
	Families []FamilyConfig `toml:"families"`
	// Infer bounds what an infer request may make the agent allocate.
	Infer InferConfig `toml:"infer"`
	// Metrics is the Prometheus endpoint (its listen is http.listen's old
	// name).
	Metrics MetricsConfig `toml:"metrics"`
	// HTTP serves /metrics and the Open Inference Protocol (/v2).
	HTTP HTTPConfig `toml:"http"`
	// HomeAssistant is MQTT discovery for Home Assistant.
	HomeAssistant HomeAssistantConfig `toml:"homeassistant"`
	// Fleet shares calibrations with twin devices over the broker.
	Fleet FleetConfig `toml:"fleet"`
	// Updates tunes how a model replaced on disk is picked up, checked,
	// swapped in and rolled back.
	Updates UpdatesConfig `toml:"updates"`
}

// UpdatesConfig tunes model updates.
type UpdatesConfig struct {
	// Watch models_dir and the configured models' folders for changes
	// (fsnotify); without it a change is seen on `rescan` or SIGHUP.
	// Default true.
	Watch *bool `toml:"watch"`
	// Debounce waits for a changed file to stay the same size this long
	// before it is read (a copy still being written). Default "500ms".
	Debounce time.Duration `toml:"debounce"`
	// KeepPreviousBytes bounds the copy of each model version kept under
	// the state dir (what rollback restores, and what is served, so a file
	// rewritten in place cannot change a mapped model). Larger models are
	// hard-linked when the state dir is on the same file system, otherwise
	// served from their path without a copy (no rollback). Default 64MiB.
	KeepPreviousBytes ByteSize `toml:"keep_previous_bytes"`
	// AutoRollback rolls an update back when its first RollbackWindow
	// requests fail more often than the previous version's did. Default true.
	AutoRollback *bool `toml:"auto_rollback"`
	// RollbackWindow is how many requests after an update are watched.
	// Default 20.
	RollbackWindow int `toml:"rollback_window"`
	// ParityRing is how many recent requests per model are kept (in
	// memory, never stored) to replay through an update; ParityRingBytes
	// bounds their bytes over all models. Defaults 16 and 4MiB.
	ParityRing      int      `toml:"parity_ring"`
	ParityRingBytes ByteSize `toml:"parity_ring_bytes"`
}

func (u UpdatesConfig) watch() bool        { return u.Watch == nil || *u.Watch }
func (u UpdatesConfig) autoRollback() bool { return u.AutoRollback == nil || *u.AutoRollback }

// InferConfig bounds inference requests.
type InferConfig struct {
	// MaxImagePixels refuses images whose header declares more pixels
	// (width × height) with input_too_large, before decoding. Default
	// 16000000; 16-bit images get half as many.
	MaxImagePixels int `toml:"max_image_pixels"`
	// DecodeBudget bounds the memory all image decodes in flight hold,
	// each counted by its format and mode from the header (a progressive
	// JPEG keeps every coefficient block: 15 bytes a pixel at 4:4:4). An
	// image that can never fit is refused (input_too_large); one that fits
	// waits for room. Default 0 ("auto"): derived from the memory limit
	// (status: metrics.memory.plan).
	DecodeBudget ByteSize `toml:"decode_budget"`
}

// PowerConfig is the energy policy (see power.Policy for the table).
type PowerConfig struct {
	// SysfsRoot is where sys/class/{power_supply,thermal,powercap} are
	// read. Default "/".
	SysfsRoot       string        `toml:"sysfs_root"`
	CriticalPercent int           `toml:"critical_percent"`   // default 10: nothing warms below
	LowPercent      int           `toml:"low_percent"`        // default 20: pinned only below
	BatteryTopK     int           `toml:"battery_top_k"`      // default 2
	MinHeadroomC    float64       `toml:"min_headroom_c"`     // default 5 °C from a trip point: defer
	MaxTempC        float64       `toml:"max_temp_c"`         // default 80 °C: defer
	BusyLoadPerCore float64       `toml:"busy_load_per_core"` // default 0.9: defer
	DeferFor        time.Duration `toml:"defer_for"`          // default 30s
	MaxStagger      time.Duration `toml:"max_stagger"`        // default 0: no random delay
	// WattsPerCPUSecond turns prewarm CPU time into an energy estimate.
	// Default 2.5.
	WattsPerCPUSecond float64 `toml:"watts_per_cpu_second"`
}

// PrewarmConfig tunes when prewarming happens and when warmth is given up.
type PrewarmConfig struct {
	// KeepAlive: interpreters of unpinned models idle this long are freed.
	// Default "10m"; "0s" keeps them.
	KeepAlive time.Duration `toml:"keep_alive"`
	// KeepMapping keeps a trimmed model mapped (skipping the map stage next
	// time) while the budget allows. Default true.
	KeepMapping *bool `toml:"keep_mapping"`
	// ScheduleLead: this long before an hour in which the usage history
	// predicts demand (≥ ScheduleMinDemand requests), wake. Default "5m".
	ScheduleLead      time.Duration `toml:"schedule_lead"`
	ScheduleMinDemand float64       `toml:"schedule_min_demand"`
	// ResumeCheck is how often the suspend gap is checked. Default "2s".
	ResumeCheck time.Duration `toml:"resume_check"`
}

// FamilyConfig names model ids from fast to precise. Requests to the family
// id are answered by the most precise warm variant; the precise one warms in
// the background, and once warm it answers every later request.
type FamilyConfig struct {
	ID       string   `toml:"id"`
	Variants []string `toml:"variants"`
	// SampleFraction of the requests a fast variant answers are kept and,
	// once the precise variant is warm, run through it in the background,
	// to measure how often the fast answer agrees (metrics "tiers").
	// Default 0.1.
	SampleFraction *float64 `toml:"sample_fraction"`
	// MinFastAgreement: once at least 10 samples were compared, requests
	// wait for the precise variant (up to EscalateWait) while the fast
	// one agrees with it less often than this. 0 (default): never.
	MinFastAgreement float64 `toml:"min_fast_agreement"`
	// EscalateBelow: a fast answer whose top score is below this waits for
	// the precise variant (up to EscalateWait). 0 (default): never.
	EscalateBelow float64 `toml:"escalate_below"`
	// EscalateWait bounds an escalated request's wait for the precise
	// variant; past it the fast answer is given, and the reply says so.
	// Default "2s".
	EscalateWait time.Duration `toml:"escalate_wait"`
}

func (f FamilyConfig) sampleFraction() float64 {
	if f.SampleFraction == nil {
		return 0.1
	}
	return *f.SampleFraction
}

func (f FamilyConfig) escalateWait() time.Duration {
	if f.EscalateWait <= 0 {
		return 2 * time.Second
	}
	return f.EscalateWait
}

// MetricsConfig is the Prometheus endpoint.
type MetricsConfig struct {
	// Listen is the old name of HTTP.Listen: the same listener, which
	// serves /v2 too. "" (default) is off.
	Listen string `toml:"listen"`
}

// HTTPConfig is the HTTP listener: /metrics (Prometheus) and the Open
// Inference Protocol under /v2 (docs/http.md).
type HTTPConfig struct {
	// Listen serves HTTP here, e.g. "127.0.0.1:9464"; "" (default) is off:
	// a board opens no port nobody asked for, and local programs already
	// have MQTT.
	Listen string `toml:"listen"`
	// TokenFile holds a bearer token every request must carry
	// ("Authorization: Bearer TOKEN"); required when Listen is not a
	// loopback address, unless AllowAnonymous.
	TokenFile string `toml:"token_file"`
	// AllowAnonymous lets a non-loopback Listen serve without a token:
	// anyone who reaches the port may run inferences and read /metrics.
	AllowAnonymous bool `toml:"allow_anonymous"`
}

// httpListen is where the HTTP listener serves ("" off): http.listen, or
// its old name metrics.listen.
func (c Config) httpListen() string {
	if c.HTTP.Listen != "" {
		return c.HTTP.Listen
	}
	return c.Metrics.Listen
}

// MQTTConfig is the broker connection and what goes over it.
type MQTTConfig struct {
	// Brokers, tried in order: "tcp://host:1883", "ssl://host:8883".
	Brokers []string `toml:"brokers"`
	// LocalListen: with no Brokers, the agent serves MQTT itself here (an
	// embedded broker for local programs and `edge-agent call`); if
	// something already listens there it connects to that as a client.
	// Default "127.0.0.1:1883"; "" turns it off. On loopback it admits
	// any local client; beyond loopback it wants LocalUsersFile (or
	// LocalAllowAnonymous). docs/mqtt-broker.md has the recipe.
	LocalListen string `toml:"local_listen"`
	// LocalUsersFile is the local broker's users: a mosquitto password
	// file written with mosquitto_passwd. Set, every client logs in.
	LocalUsersFile string `toml:"local_users_file"`
	// LocalACL gives users of LocalUsersFile a role: "command" may publish
	// this device's command topics; "read" (the default for users not
	// named) may subscribe but not command.
	LocalACL map[string]string `toml:"local_acl"`
	// LocalAllowAnonymous lets clients without a login into the local
	// broker: needed to listen beyond loopback without LocalUsersFile
	// (then anyone who reaches it may command; status says so); beside a
	// users file anonymous clients are read-only.
	LocalAllowAnonymous bool `toml:"local_allow_anonymous"`
	// LocalCertFile and LocalKeyFile (PEM) make the local broker speak
	// TLS on LocalListen.
	LocalCertFile string `toml:"local_cert_file"`
	LocalKeyFile  string `toml:"local_key_file"`
	// Prefix of all topics. Default "edge".
	Prefix string `toml:"prefix"`
	// Device id in topics. Default: the first 12 characters of
	// /etc/machine-id, else the host name.
	Device string `toml:"device"`
	// Username and PasswordFile (read at start; never on the command line).
	Username     string `toml:"username"`
	PasswordFile string `toml:"password_file"`
	// CAFile to verify the broker; CertFile and KeyFile for client auth.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// KeepAlive; the broker announces "offline" 1.5× this after the agent
	// vanishes. Default "30s".
	KeepAlive time.Duration `toml:"keepalive"`
	// ConnectWait is how long start waits for the broker before warming
	// models anyway. Default "2s".
	ConnectWait time.Duration `toml:"connect_wait"`
	// ReconnectMin and ReconnectMax bound the full-jitter exponential
	// backoff between connection attempts (the n-th wait is uniform in
	// [0, min(max, min·2ⁿ))): a fleet whose broker restarts comes back
	// spread out. Defaults 1s and 1m.
	ReconnectMin time.Duration `toml:"reconnect_min"`
	ReconnectMax time.Duration `toml:"reconnect_max"`
	// MetricsInterval between metrics messages. Default "60s".
	MetricsInterval time.Duration `toml:"metrics_interval"`
	// CommandQueue bounds queued commands (beyond: "busy"). Default 256.
	CommandQueue int `toml:"command_queue"`
	// CommandWorkers run commands concurrently. Default 8. A request
	// waiting for a load holds its worker: as many requests for a model
	// whose storage stalls hold back every other request, and the pool
	// orders (smallest first) only the requests it sees: with 2, a small
	// model asked at a start waited behind two large ones' loads. More
	// workers raise a burst's peak memory (each holds a payload; decodes
	// are bounded by the decode budget).
	CommandWorkers int `toml:"command_workers"`
	// MaxPayload bounds one command's payload. Default "1MiB".
	MaxPayload ByteSize `toml:"max_payload"`
}

// StateConfig tunes the state file.
type StateConfig struct {
	// LockTimeout bounds the wait for the state file's lock. Default "3s".
	LockTimeout time.Duration `toml:"lock_timeout"`
	// OutboxMaxMessages and OutboxMaxBytes bound unsent telemetry; the
	// oldest is dropped first. Defaults 10000 and "8MiB".
	OutboxMaxMessages int      `toml:"outbox_max_messages"`
	OutboxMaxBytes    ByteSize `toml:"outbox_max_bytes"`
}

// CalibrationConfig tunes calibration, which runs once per model, runtime,
// board and options, and is restored from state afterwards.
type CalibrationConfig struct {
	// Runs is how many staged loads the stage medians are over. Default 3.
	Runs int `toml:"runs"`
	// SteadyInvokes per thread count tried. Default 5.
	SteadyInvokes int `toml:"steady_invokes"`
	// MaxThreads bounds the thread auto-tune (pool.threads = 0). Default 4.
	// Uncalibrated models run with min(cores, max_threads) threads.
	MaxThreads int `toml:"max_threads"`
	// IdleAfter: calibration, which runs in the background, waits until no
	// request came for this long (requests preempt it). Default "1s".
	IdleAfter time.Duration `toml:"idle_after"`
}

// DelegateConfig is an external delegate library, e.g. the Edge TPU's.
type DelegateConfig struct {
	Name    string            `toml:"name"`
	Library string            `toml:"library"`
	Options map[string]string `toml:"options"`
}

// PoolConfig sizes the interpreter pool.
type PoolConfig struct {
	// Budget caps the memory warm models hold, e.g. "256MiB". 0 = no cap.
	// "auto": 60 % of what the agent may use beyond its own baseline (the
	// cgroup's memory.max, e.g. the unit's MemoryMax=, else the machine's
	// available memory), measured at start; the rest is headroom for
	// queued commands, image decoding and the allocator.
	Budget ByteSize `toml:"budget"`
	// MemoryCheck is how often the process's and its cgroup's memory are
	// read (RSS, memory.current/max, /proc/pressure/memory). Default "5s";
	// "0s" turns the pressure response off.
	MemoryCheck time.Duration `toml:"memory_check"`
	// PressureHigh and PressureLow are fractions of the cgroup's limit:
	// above high (or with memory stalls, PSI some avg10 ≥ PressurePSI %),
	// idle unpinned models are evicted until the cgroup is below low.
	// Defaults 0.9, 0.8 and 10.
	PressureHigh float64 `toml:"pressure_high"`
	PressureLow  float64 `toml:"pressure_low"`
	PressurePSI  float64 `toml:"pressure_psi"`
	// InterpretersPerModel bounds concurrent requests per model. Default 1.
	InterpretersPerModel int `toml:"interpreters_per_model"`
	// Threads for each interpreter; 0 leaves the runtime's default.
	Threads int `toml:"threads"`
	// PageIn faults a model's file into the page cache, through a mapping
	// of its own, before warming it. Default true.
	PageIn *bool `toml:"page_in"`
	// HugePages has the page cache hold model files of 8 MiB or more in
	// 2 MiB folios, so each cold start maps them with one entry per 2 MiB
	// instead of one per 4 KiB: a 64 MiB model's first invoke took 6 ms
	// instead of 26–31 here. Once the start has settled (and after each
	// reload, and every 10 minutes) a model file that nothing maps and
	// that the page cache holds in small pages is dropped from it and read
	// in again through a huge-page mapping: one read of the file from
	// storage. (page_in reads files of that size through a huge-page
	// mapping either way: that costs nothing more.) Needs a kernel whose
	// file system has large folios (ext4 from 6.16, XFS from 5.18);
	// elsewhere it finds nothing to do. Default true.
	HugePages *bool `toml:"huge_pages"`
	// Eviction is the policy for which warm model leaves when the budget
	// is short, and when idle ones are freed or rewarmed: "histogram"
	// (default: cost-aware order, keep-alive and pre-warm windows from
	// each model's idle times), "cost" (decayed demand × cold time saved
	// per byte), "gdsf" (Greedy-Dual-Size-Frequency, with an aging clock),
	// "ttl" (LRU, freed after prewarm.keep_alive idle) or "lru". The
	// bench's "Eviction policies on traces" section compares them.
	Eviction string `toml:"eviction"`
}

// ModelConfig is one model.
type ModelConfig struct {
	ID     string `toml:"id"`
	Path   string `toml:"path"`
	Pinned bool   `toml:"pinned"`
	// Delegates to try in order (names from [[delegates]]); the CPU is the
	// last resort. A delegate that failed or crashed is not tried again for
	// the same model, runtime and board.
	Delegates []string `toml:"delegates"`
	// CPUTwin is the CPU build of a model compiled for an accelerator (an
	// Edge TPU model), served under the same id when no delegate works.
	CPUTwin string `toml:"cpu_twin"`
	// Labels file (one per line) for classification answers.
	Labels string `toml:"labels"`
	// Stateful keeps a model's variable tensors (an LSTM's state) from one
	// request to the next: for streaming models fed in order. The model
	// gets one interpreter, whose state every request to it continues.
	// Otherwise (default) the state is reset before every request, so an
	// answer never depends on what was asked before.
	Stateful bool `toml:"stateful"`
	// AllowSignatureChange lets an update change the input or output
	// tensors (shape, type); otherwise such an update is rejected, since
	// clients send fixed-size tensors.
	AllowSignatureChange bool `toml:"allow_signature_change"`
	// GoldenInput and GoldenTop1: an update must answer GoldenInput (an
	// image or raw tensor file) with class GoldenTop1, or it is rejected.
	GoldenInput string `toml:"golden_input"`
	GoldenTop1  *int   `toml:"golden_top1"`
	// MinAgreement rejects an update whose answers to recent real requests
	// (replayed through both versions) agree with the serving version's
	// less often than this (top-1 for classifiers); 0 (default) only
	// reports the agreement.
	MinAgreement float64 `toml:"min_agreement"`
}

// DemoModelSize is the size of the model generated when none is configured.
const DemoModelSize = 4 << 20

// DefaultConfig is the configuration used without a file.
func DefaultConfig() Config {
	state := os.Getenv("STATE_DIRECTORY")
	if state == "" {
		state = "state"
	} else {
		// systemd may pass several, colon-separated; the first is ours.
		state, _, _ = strings.Cut(state, ":")
	}
	pageIn := true
	return Config{
		StateDir: state,
		LogLevel: "info",
		Pool: PoolConfig{Budget: 256 << 20, InterpretersPerModel: 1, PageIn: &pageIn, MemoryCheck: 5 * time.Second,
			PressureHigh: 0.9, PressureLow: 0.8, PressurePSI: 10},
		State:         StateConfig{LockTimeout: 3 * time.Second, OutboxMaxMessages: 10000, OutboxMaxBytes: 8 << 20},
		Calibration:   CalibrationConfig{Runs: 3, SteadyInvokes: 5, MaxThreads: 4, IdleAfter: time.Second},
		HomeAssistant: HomeAssistantConfig{DiscoveryPrefix: "homeassistant"},
		Fleet: FleetConfig{Enabled: true, Publish: true, Subscribe: true, LookupWait: time.Second, Tolerance: 1,
			MaxRecords: 1024, Stagger: time.Second},
		MQTT: MQTTConfig{Prefix: "edge", LocalListen: DefaultLocalListen, KeepAlive: 30 * time.Second, ConnectWait: 2 * time.Second,
			ReconnectMin: time.Second, ReconnectMax: time.Minute,
			MetricsInterval: time.Minute, CommandQueue: 256, CommandWorkers: 8, MaxPayload: 1 << 20},
		Power: PowerConfig{SysfsRoot: "/", CriticalPercent: 10, LowPercent: 20, BatteryTopK: 2, MinHeadroomC: 5,
			MaxTempC: 80, BusyLoadPerCore: 0.9, DeferFor: 30 * time.Second, WattsPerCPUSecond: 2.5},
		Prewarm: PrewarmConfig{KeepAlive: 10 * time.Minute, ScheduleLead: 5 * time.Minute, ScheduleMinDemand: 0.5,
			ResumeCheck: 2 * time.Second},
		Infer: InferConfig{MaxImagePixels: infer.DefaultMaxPixels},
		Updates: UpdatesConfig{Debounce: 500 * time.Millisecond, KeepPreviousBytes: 64 << 20, RollbackWindow: 20,
			ParityRing: 16, ParityRingBytes: 4 << 20},
	}
}

// LoadConfig reads path over the defaults; "" means defaults only.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if path == "" {
		if err := c.applyEnv(); err != nil {
			return c, &configError{path: "(defaults)", msg: err.Error()}
		}
		return c, c.Validate()
	}
	md, err := toml.DecodeFile(path, &c)
	if err != nil {
		return c, &configError{path: path, msg: err.Error()}
	}
	if un := md.Undecoded(); len(un) > 0 {
		keys := make([]string, len(un))
		for i, k := range un {
			keys[i] = k.String()
		}
		return c, &configError{path: path, msg: "unknown field(s): " + strings.Join(keys, ", ")}
	}
	if err := c.applyEnv(); err != nil {
		return c, &configError{path: path, msg: err.Error()}
	}
	if err := c.Validate(); err != nil {
		return c, &configError{path: path, msg: err.Error()}
	}
	return c, nil
}

// Environment overrides for what deployments change; they win over the file.
var envOverrides = []struct {
	name  string
	apply func(*Config, string) error
}{
	{"EDGE_AGENT_STATE_DIR", func(c *Config, v string) error { c.StateDir = v; return nil }},
	{"EDGE_AGENT_LOG_LEVEL", func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{"EDGE_AGENT_MODELS_DIR", func(c *Config, v string) error { c.ModelsDir = v; return nil }},
	{"EDGE_AGENT_BUDGET", func(c *Config, v string) error {
		n, err := ParseBudget(v)
		c.Pool.Budget = n
		return err
	}},
	{"EDGE_AGENT_MQTT_BROKERS", func(c *Config, v string) error {
		c.MQTT.Brokers = nil
		for _, b := range strings.Split(v, ",") {
			if b = strings.TrimSpace(b); b != "" {
				c.MQTT.Brokers = append(c.MQTT.Brokers, b)
			}
		}
		return nil
	}},
	{"EDGE_AGENT_DEVICE", func(c *Config, v string) error { c.MQTT.Device = v; return nil }},
	// "off" turns the local broker off.
	{"EDGE_AGENT_MQTT_LOCAL_LISTEN", func(c *Config, v string) error {
		if v == "off" {
			v = ""
		}
		c.MQTT.LocalListen = v
		return nil
	}},
	// systemd: LoadCredential=mqtt-password:... and
	// Environment=EDGE_AGENT_MQTT_PASSWORD_FILE=%d/mqtt-password
	{"EDGE_AGENT_MQTT_PASSWORD_FILE", func(c *Config, v string) error { c.MQTT.PasswordFile = v; return nil }},
}

// EnvOverrides names the environment variables LoadConfig honours.
func EnvOverrides() []string {
	out := make([]string, len(envOverrides))
	for i, e := range envOverrides {
		out[i] = e.name
	}
	return out
}

func (c *Config) applyEnv() error {
	var errs []error
	for _, e := range envOverrides {
		if v, ok := os.LookupEnv(e.name); ok && v != "" {
			if err := e.apply(c, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", e.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

type configError struct{ path, msg string }

func (e *configError) Error() string { return fmt.Sprintf("config %s: %s", e.path, e.msg) }
func (e *configError) Unwrap() error { return ErrConfig }

var modelID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidModelID reports whether id is usable as a model id: letters, digits,
// '.', '_' and '-', not starting with a punctuation mark, at most 128 bytes.
// Ids appear in MQTT topics and replies, so they never contain '/'.
func ValidModelID(id string) bool { return modelID.MatchString(id) }

// Validate checks every field; messages name the field. It opens nothing.
func (c Config) Validate() error {
	var errs []error
	if c.StateDir == "" {
		errs = append(errs, errors.New("state_dir: must not be empty"))
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level: %q is not one of debug, info, warn, error", c.LogLevel))
	}
	if c.Pool.Budget < 0 && c.Pool.Budget != AutoBudget {
		errs = append(errs, errors.New(`pool.budget: must not be negative (or "auto")`))
	}
	if c.Pool.PressureLow <= 0 || c.Pool.PressureLow >= c.Pool.PressureHigh || c.Pool.PressureHigh > 1 {
		errs = append(errs, errors.New("pool.pressure_low and pool.pressure_high: want 0 < low < high ≤ 1"))
	}
	if c.Pool.MemoryCheck < 0 {
		errs = append(errs, errors.New("pool.memory_check: must not be negative"))
	}
	errs = append(errs, intRange("pool.interpreters_per_model", c.Pool.InterpretersPerModel, 1, 64),
		intRange("pool.threads", c.Pool.Threads, 0, 256))
	if c.State.LockTimeout <= 0 {
		errs = append(errs, errors.New("state.lock_timeout: must be positive"))
	}
	if c.State.OutboxMaxMessages < 1 {
		errs = append(errs, errors.New("state.outbox_max_messages: must be at least 1"))
	}
	if c.State.OutboxMaxBytes < 1024 {
		errs = append(errs, errors.New("state.outbox_max_bytes: must be at least 1KiB"))
	}
	errs = append(errs, intRange("calibration.runs", c.Calibration.Runs, 1, 50),
		intRange("calibration.steady_invokes", c.Calibration.SteadyInvokes, 1, 1000),
		intRange("calibration.max_threads", c.Calibration.MaxThreads, 1, 256))
	if c.Calibration.IdleAfter < 0 {
		errs = append(errs, errors.New("calibration.idle_after: must not be negative"))
	}
	if c.MQTT.KeepAlive < time.Second {
		errs = append(errs, errors.New("mqtt.keepalive: must be at least 1s"))
	}
	if c.MQTT.ConnectWait < 0 {
		errs = append(errs, errors.New("mqtt.connect_wait: must not be negative"))
	}
	if c.MQTT.MetricsInterval < time.Second {
		errs = append(errs, errors.New("mqtt.metrics_interval: must be at least 1s"))
	}
	if c.MQTT.CommandQueue < 1 || c.MQTT.CommandWorkers < 1 {
		errs = append(errs, errors.New("mqtt.command_queue and mqtt.command_workers: must be at least 1"))
	}
	if err := tflite.ParsePolicy(c.Pool.Eviction); err != nil {
		errs = append(errs, fmt.Errorf("pool.eviction: %w", err))
	}
	if c.Infer.MaxImagePixels < 1 {
		errs = append(errs, errors.New("infer.max_image_pixels: must be at least 1"))
	}
	if d := c.Infer.DecodeBudget; d != 0 && d != AutoBudget && d < 1<<20 {
		errs = append(errs, errors.New(`infer.decode_budget: at least 1MiB, or 0 / "auto" to derive it from the memory limit`))
	}
	if u := c.Updates; u.Debounce < 0 || u.KeepPreviousBytes < 0 || u.RollbackWindow < 1 || u.ParityRing < 0 || u.ParityRingBytes < 0 {
		errs = append(errs, errors.New("updates: debounce, keep_previous_bytes, parity_ring and parity_ring_bytes ≥ 0, rollback_window ≥ 1"))
	}
	for i, m := range c.Models {
		if m.MinAgreement < 0 || m.MinAgreement > 1 {
			errs = append(errs, fmt.Errorf("models[%d].min_agreement: want 0..1", i))
		}
		if (m.GoldenInput == "") != (m.GoldenTop1 == nil) {
			errs = append(errs, fmt.Errorf("models[%d]: golden_input and golden_top1 go together", i))
		}
	}
	if c.MQTT.MaxPayload < 1024 {
		errs = append(errs, errors.New("mqtt.max_payload: must be at least 1KiB"))
	}
	if c.HTTP.Listen != "" && c.Metrics.Listen != "" && c.HTTP.Listen != c.Metrics.Listen {
		errs = append(errs, errors.New("metrics.listen is the old name of http.listen (one listener): set only http.listen"))
	}
	if l := c.httpListen(); l != "" && !mqtt.IsLoopback(l) && c.HTTP.TokenFile == "" && !c.HTTP.AllowAnonymous {
		errs = append(errs, fmt.Errorf("http.listen %q is not loopback: set http.token_file (a bearer token), or http.allow_anonymous = true to let anyone who reaches it in", l))
	}
	for name, addr := range map[string]string{"mqtt.local_listen": c.MQTT.LocalListen, "metrics.listen": c.Metrics.Listen, "http.listen": c.HTTP.Listen} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			errs = append(errs, fmt.Errorf("%s: want host:port, e.g. 127.0.0.1:1883 (%v)", name, err))
		}
	}
	errs = append(errs, c.MQTT.validateLocal(len(c.MQTT.Brokers) == 0 && c.MQTT.LocalListen != "")...)
	if f := c.Fleet; f.LookupWait < 0 || f.LookupWait > time.Minute || !(f.Tolerance > 0) || f.MaxRecords < 1 || f.Stagger < 0 {
		errs = append(errs, errors.New("fleet: lookup_wait 0..1m, tolerance > 0, max_records ≥ 1, stagger ≥ 0"))
	}
	if p := c.HomeAssistant.DiscoveryPrefix; c.HomeAssistant.Enabled && (p == "" || strings.ContainsAny(p, "#+")) {
		errs = append(errs, errors.New("homeassistant.discovery_prefix: a topic without wildcards"))
	}
	if len(c.MQTT.Brokers) > 0 {
		if err := c.mqttOptions().Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Power.CriticalPercent < 0 || c.Power.LowPercent < c.Power.CriticalPercent || c.Power.LowPercent > 100 {
		errs = append(errs, fmt.Errorf("power: need 0 ≤ critical_percent (%d) ≤ low_percent (%d) ≤ 100", c.Power.CriticalPercent, c.Power.LowPercent))
	}
	if c.Power.BatteryTopK < 0 || c.Power.DeferFor <= 0 || c.Power.MaxStagger < 0 || c.Power.WattsPerCPUSecond <= 0 {
		errs = append(errs, errors.New("power: battery_top_k ≥ 0, defer_for > 0, max_stagger ≥ 0 and watts_per_cpu_second > 0"))
	}
	if c.Prewarm.KeepAlive < 0 || c.Prewarm.ScheduleLead < 0 || c.Prewarm.ResumeCheck <= 0 {
		errs = append(errs, errors.New("prewarm: keep_alive and schedule_lead ≥ 0, resume_check > 0"))
	}
	modelIDs := map[string]bool{}
	for _, m := range c.Models {
		modelIDs[m.ID] = true
	}
	for i, f := range c.Families {
		switch {
		case !ValidModelID(f.ID):
			errs = append(errs, fmt.Errorf("families[%d].id: %q is not a valid id", i, f.ID))
		case modelIDs[f.ID]:
			errs = append(errs, fmt.Errorf("families[%d].id: %q is also a model id", i, f.ID))
		case len(f.Variants) < 2:
			errs = append(errs, fmt.Errorf("families[%d].variants: want at least two, fast to precise", i))
		case f.sampleFraction() < 0 || f.sampleFraction() > 1 || f.MinFastAgreement < 0 || f.MinFastAgreement > 1 ||
			f.EscalateBelow < 0 || f.EscalateBelow > 1 || f.EscalateWait < 0:
			errs = append(errs, fmt.Errorf("families[%d]: sample_fraction, min_fast_agreement and escalate_below are 0..1, escalate_wait ≥ 0", i))
		}
		for _, v := range f.Variants {
			if !modelIDs[v] && c.ModelsDir == "" {
				errs = append(errs, fmt.Errorf("families[%d].variants: %q is not a configured model", i, v))
			}
		}
	}
	names := make([]string, len(c.Delegates))
	for i, d := range c.Delegates {
		names[i] = d.Name
		if d.Library == "" {
			errs = append(errs, fmt.Errorf("delegates[%d].library: must not be empty", i))
		}
	}
	delegates, derrs := checkIDs("delegates[%d].name", names)
	errs = append(errs, derrs...)
	ids := make([]string, len(c.Models))
	for i, m := range c.Models {
		ids[i] = m.ID
		for _, d := range m.Delegates {
			if !delegates[d] {
				errs = append(errs, fmt.Errorf("models[%d].delegates: %q is not a configured delegate", i, d))
			}
		}
		if m.Path == "" {
			errs = append(errs, fmt.Errorf("models[%d].path: must not be empty", i))
		}
	}
	_, merrs := checkIDs("models[%d].id", ids)
	errs = append(errs, merrs...)
	return errors.Join(errs...)
}

// intRange is nil when v is in lo..hi, else an error naming field.
// (errors.Join drops the nils.)
func intRange(field string, v, lo, hi int) error {
	if v < lo || v > hi {
		return fmt.Errorf("%s: %d not in %d..%d", field, v, lo, hi)
	}
	return nil
}

// checkIDs validates ids and their uniqueness; field is a format with the
// index, e.g. "models[%d].id". It returns the set of ids.
func checkIDs(field string, ids []string) (map[string]bool, []error) {
	seen := map[string]bool{}
	var errs []error
	for i, id := range ids {
		name := fmt.Sprintf(field, i)
		switch {
		case !ValidModelID(id):
			errs = append(errs, fmt.Errorf("%s: %q must be 1-128 of [A-Za-z0-9._-], starting with a letter or digit", name, id))
		case seen[id]:
			errs = append(errs, fmt.Errorf("%s: %q is used twice", name, id))
		}
		seen[id] = true
	}
	return seen, errs
}

// policy is the energy policy of the configuration.
func (c Config) policy() power.Policy {
	p := c.Power
	pol := power.Policy{CriticalPercent: p.CriticalPercent, LowPercent: p.LowPercent, BatteryTopK: p.BatteryTopK,
		MinHeadroomC: p.MinHeadroomC, MaxTempC: p.MaxTempC, BusyLoadPerCore: p.BusyLoadPerCore,
		DeferFor: p.DeferFor, MaxStagger: p.MaxStagger}
	if c.fleetMember() {
		pol.MaxStagger = max(pol.MaxStagger, c.Fleet.Stagger)
	}
	return pol
}

// family returns the family with id.
func (c Config) family(id string) (FamilyConfig, bool) {
	for _, f := range c.Families {
		if f.ID == id {
			return f, true
		}
	}
	return FamilyConfig{}, false
}

// pageIn is the effective page_in setting.
func (c Config) pageIn() bool { return c.Pool.PageIn == nil || *c.Pool.PageIn }

func (c Config) hugePages() bool { return c.Pool.HugePages == nil || *c.Pool.HugePages }

// mqttOptions maps the configuration onto the client's options.
// validateLocal checks the local broker's keys (files are read at start);
// serving: the agent would serve it.
func (m MQTTConfig) validateLocal(serving bool) []error {
	var errs []error
	if serving && !mqtt.IsLoopback(m.LocalListen) && m.LocalUsersFile == "" && !m.LocalAllowAnonymous {
		errs = append(errs, fmt.Errorf("mqtt.local_listen %s is beyond loopback: set mqtt.local_users_file (a mosquitto_passwd file, docs/mqtt-broker.md), or mqtt.local_allow_anonymous = true to let anyone who reaches it command the agent", m.LocalListen))
	}
	for user, role := range m.LocalACL {
		if role != string(mqtt.RoleCommand) && role != string(mqtt.RoleRead) {
			errs = append(errs, fmt.Errorf("mqtt.local_acl.%s: %q, want \"command\" or \"read\"", user, role))
		}
	}
	if len(m.LocalACL) > 0 && m.LocalUsersFile == "" {
		errs = append(errs, errors.New("mqtt.local_acl needs mqtt.local_users_file"))
	}
	if (m.LocalCertFile == "") != (m.LocalKeyFile == "") {
		errs = append(errs, errors.New("mqtt.local_cert_file and mqtt.local_key_file go together"))
	}
	return errs
}

// localBrokerOptions are the local broker's options from the config.
func (c Config) localBrokerOptions() mqtt.LocalOptions {
	roles := map[string]mqtt.Role{}
	for user, role := range c.MQTT.LocalACL {
		roles[user] = mqtt.Role(role)
	}
	return mqtt.LocalOptions{Addr: c.MQTT.LocalListen, UsersFile: c.MQTT.LocalUsersFile, Roles: roles,
		AllowAnonymous: c.MQTT.LocalAllowAnonymous, CertFile: c.MQTT.LocalCertFile, KeyFile: c.MQTT.LocalKeyFile,
		Prefix: c.MQTT.Prefix, Device: c.device()}
}

func (c Config) mqttOptions() mqtt.Options {
	return mqtt.Options{
		Brokers: c.MQTT.Brokers, Prefix: c.MQTT.Prefix, Device: c.device(),
		Username: c.MQTT.Username, PasswordFile: c.MQTT.PasswordFile,
		CAFile: c.MQTT.CAFile, CertFile: c.MQTT.CertFile, KeyFile: c.MQTT.KeyFile,
		KeepAlive: c.MQTT.KeepAlive, MinReconnect: c.MQTT.ReconnectMin, MaxReconnect: c.MQTT.ReconnectMax, QueueSize: c.MQTT.CommandQueue, Workers: c.MQTT.CommandWorkers,
		MaxPayload: int(c.MQTT.MaxPayload), Version: Version,
	}
}

// device is the configured device id or one derived from the machine.
func (c Config) device() string {
	if c.MQTT.Device != "" {
		return c.MQTT.Device
	}
	return defaultDevice()
}

var unsafeID = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func defaultDevice() string {
	if b, err := os.ReadFile("/etc/machine-id"); err == nil {
		if id := strings.TrimSpace(string(b)); len(id) >= 12 {
			return id[:12]
		}
	}
	host, err := os.Hostname()
	if id := unsafeID.ReplaceAllString(host, "-"); err == nil && id != "" && len(id) <= 64 {
		return id
	}
	return "edge-agent"
}

// delegate returns the configured delegate called name.
func (c Config) delegate(name string) (DelegateConfig, bool) {
	for _, d := range c.Delegates {
		if d.Name == name {
			return d, true
		}
	}
	return DelegateConfig{}, false
}

// demoModelPath is where the demo model lives when nothing is configured.
func (c Config) demoModelPath() string { return filepath.Join(c.StateDir, "models", "demo.tflite") }

// DefaultLocalListen is where the local broker listens by default.
const DefaultLocalListen = "127.0.0.1:1883"

// ByteSize is a number of bytes written as an integer or with a unit:
// "512KiB", "256MiB", "1GiB" (powers of 1024) or "100MB" (powers of 1000).
type ByteSize int64

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	"k": 1 << 10, "m": 1 << 20, "g": 1 << 30,
	"kb": 1e3, "mb": 1e6, "gb": 1e9,
}

var sizeRE = regexp.MustCompile(`^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$`)

// AutoBudget is pool.budget = "auto": derived at start from the cgroup's
// memory limit (or what the machine has available) minus the agent's own
// measured baseline.
const AutoBudget ByteSize = -2

// ParseBudget parses a budget: a size, or "auto".
func ParseBudget(s string) (ByteSize, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return AutoBudget, nil
	}
	return ParseByteSize(s)
}

// ParseByteSize parses s as a ByteSize.
func ParseByteSize(s string) (ByteSize, error) {
	m := sizeRE.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("size %q: want a number with an optional unit (KiB, MiB, GiB, KB, MB, GB)", s)
	}
	unit, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q", s, m[2])
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil || v*float64(unit) > 1<<62 {
		return 0, fmt.Errorf("size %q: out of range", s)
	}
	return ByteSize(v * float64(unit)), nil
}

// UnmarshalTOML accepts an integer or a string with a unit ("auto" too:
// only pool.budget takes it, the others' validation refuses it).
func (b *ByteSize) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		*b = ByteSize(x)
		return nil
	case string:
		n, err := ParseBudget(x)
		*b = n
		return err
	}
	return fmt.Errorf("size: want an integer or a string like \"256MiB\", got %T", v)
}

// String formats b for flags and logs.
func (b ByteSize) String() string { return strconv.FormatInt(int64(b), 10) }

// Set implements flag.Value.
func (b *ByteSize) Set(s string) error {
	n, err := ParseBudget(s)
	*b = n
	return err
}
