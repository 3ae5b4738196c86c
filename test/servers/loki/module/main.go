// Command loki is Grafana Loki's single binary, started the way Loki's own cmd/loki/main.go starts it
// (minus its -health subcommand and profiling knobs, which the tests do not use).
package main

import (
	// Must stay the first import: the OTLP grpc encoding falls back to this one (see Loki's cmd/loki).
	_ "google.golang.org/grpc/encoding/proto"

	"flag"
	"fmt"
	"os"
	"reflect"
	"time"

	"github.com/go-kit/log/level"
	"github.com/grafana/dskit/log"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/version"

	"github.com/grafana/loki/v3/pkg/loki"
	loki_runtime "github.com/grafana/loki/v3/pkg/runtime"
	_ "github.com/grafana/loki/v3/pkg/util/build"
	"github.com/grafana/loki/v3/pkg/util/cfg"
	util_log "github.com/grafana/loki/v3/pkg/util/log"
	"github.com/grafana/loki/v3/pkg/validation"
)

func exit(code int) {
	util_log.Flush()
	os.Exit(code)
}

func main() {
	startTime := time.Now()
	var config loki.ConfigWrapper

	if loki.PrintVersion(os.Args[1:]) {
		fmt.Println(version.Print("loki"))
		os.Exit(0)
	}
	if err := cfg.DynamicUnmarshal(&config, os.Args[1:], flag.CommandLine); err != nil {
		fmt.Fprintf(os.Stderr, "failed parsing config: %v\n", err)
		os.Exit(1)
	}

	config.LimitsConfig.SetGlobalOTLPConfig(config.Distributor.OTLPConfig)
	if err := config.LimitsConfig.SetDefaultPolicyStreamMapping(config.Distributor.DefaultPolicyStreamMappings); err != nil {
		level.Error(util_log.Logger).Log("msg", "failed to set default policy stream mappings", "err", err.Error())
		exit(1)
	}
	validation.SetDefaultLimitsForYAMLUnmarshalling(config.LimitsConfig)
	loki_runtime.SetDefaultLimitsForYAMLUnmarshalling(config.OperationalConfig)

	if reflect.DeepEqual(&config.Server.LogLevel, &log.Level{}) {
		level.Error(util_log.Logger).Log("msg", "invalid log level")
		exit(1)
	}
	serverCfg := &config.Server
	serverCfg.Log = util_log.InitLogger(serverCfg, prometheus.DefaultRegisterer, false)
	if config.InternalServer.Enable {
		config.InternalServer.Log = serverCfg.Log
	}

	if err := config.Validate(); err != nil {
		level.Error(util_log.Logger).Log("msg", "validating config", "err", err.Error())
		exit(1)
	}
	if config.VerifyConfig {
		level.Info(util_log.Logger).Log("msg", "config is valid")
		exit(0)
	}

	t, err := loki.New(config.Config)
	util_log.CheckFatal("initializing loki", err, util_log.Logger)
	if config.ListTargets {
		t.ListTargets()
		exit(0)
	}
	level.Info(util_log.Logger).Log("msg", "Starting Loki", "version", version.Info())
	err = t.Run(loki.RunOpts{StartTime: startTime})
	util_log.CheckFatal("running loki", err, util_log.Logger)
}
