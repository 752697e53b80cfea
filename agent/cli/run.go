package cli

import (
	"context"
	"flag"
	"log/slog"

	"github.com/edge-agent/edge-agent/agent"
)

// run is `edge-agent run`: the agent until ctx ends.
func (c cli) run(ctx context.Context, args []string) error {
	fs := c.newFlags("run")
	cfgPath := fs.String("config", "", "configuration file (TOML); without it, the embedded defaults")
	reportPath := fs.String("report", "", "write the startup report (JSON) to this file once ready")
	stateDir := fs.String("state-dir", "", "override state_dir")
	modelsDir := fs.String("models-dir", "", "override models_dir")
	logLevel := fs.String("log-level", "", "override log_level (debug, info, warn, error)")
	var budget agent.ByteSize
	fs.Var(&budget, "budget", `override pool.budget, e.g. 256MiB or "auto"`)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return usageErr("run: unexpected argument %q", fs.Arg(0))
	}
	// Precedence: defaults < file < environment < flags.
	load := func() (agent.Config, error) {
		cfg, err := agent.LoadConfig(*cfgPath)
		if err != nil {
			return cfg, err
		}
		if *stateDir != "" {
			cfg.StateDir = *stateDir
		}
		if *modelsDir != "" {
			cfg.ModelsDir = *modelsDir
		}
		if *logLevel != "" {
			cfg.LogLevel = *logLevel
		}
		if flagSet(fs, "budget") {
			cfg.Pool.Budget = budget
		}
		if err := cfg.Validate(); err != nil {
			return cfg, agent.InvalidConfig("(flags)", err)
		}
		return cfg, nil
	}
	cfg, err := load()
	if err != nil {
		return err
	}
	var level slog.LevelVar
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	log := slog.New(slog.NewTextHandler(c.stderr, &slog.HandlerOptions{Level: &level}))
	ro := agent.RunOptions{ReportPath: *reportPath, LogLevel: &level}
	if *cfgPath != "" {
		ro.Reload = load
	}
	return agent.Run(ctx, cfg, log, agent.Options{Started: c.started}, ro)
}

// flagSet says whether the flag was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}
