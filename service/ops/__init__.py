"""Operations: rendering the deployment from conf/parse.toml, probes, API keys and the CLI."""
