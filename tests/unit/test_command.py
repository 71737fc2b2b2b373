"""cmd / cmdStop → argv (§8.2, §8.3): comment lines, continuations, POSIX quoting."""

from __future__ import annotations

import textwrap

import pytest

from modelswap.config.macros import expand_document
from modelswap.config.yaml_io import load_text
from modelswap.process.command import split_command, stop_command_argv


def test_spec_example_with_continuations_quotes_and_comments() -> None:
    cmd = textwrap.dedent(
        """\
        python model1.py \\
          -a "double quotes" \\
          --arg2 'single quotes'
          -s
          # comment
          --arg3 123
        """
    )
    assert split_command(cmd) == [
        "python",
        "model1.py",
        "-a",
        "double quotes",
        "--arg2",
        "single quotes",
        "-s",
        "--arg3",
        "123",
    ]


def test_nested_quotes_are_kept_inside_the_outer_ones() -> None:
    argv = split_command("""run --arg4 '"string in string"' -c "'single quoted'" """)
    assert argv == ["run", "--arg4", '"string in string"', "-c", "'single quoted'"]


def test_no_shell_features_are_interpreted() -> None:
    argv = split_command("echo $HOME *.gguf a|b > out ; x#y")
    assert argv == ["echo", "$HOME", "*.gguf", "a|b", ">", "out", ";", "x#y"]


def test_indented_comment_lines_and_crlf_whitespace() -> None:
    assert split_command("   # only a comment\nserver\t--port 1\r\n") == ["server", "--port", "1"]


@pytest.mark.parametrize("cmd", ["", "   ", "\n\n", "# just a comment\n  # another"])
def test_empty_command(cmd: str) -> None:
    with pytest.raises(ValueError, match=r"^empty command$"):
        split_command(cmd)


def test_unbalanced_quote_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        split_command("server 'unterminated")


def test_stop_command_substitutes_pid() -> None:
    assert stop_command_argv("kill -TERM ${PID}", 4242) == ["kill", "-TERM", "4242"]
    assert stop_command_argv("docker stop name # ${PID} unused", 1) == [
        "docker",
        "stop",
        "name",
        "#",
        "1",
        "unused",
    ]


@pytest.mark.parametrize("cmd_stop", ["", "  \n", "# comment only", "kill 'oops ${PID}"])
def test_stop_command_falls_back_to_signal(cmd_stop: str) -> None:
    assert stop_command_argv(cmd_stop, 7) is None


def test_s20_20_cmd_stop_argv_after_expansion() -> None:
    doc = load_text(
        textwrap.dedent(
            """
            startPort: 9990
            macros: {argTwo: --arg2}
            models:
              model1:
                cmd: server --port ${PORT}
                cmdStop: |
                  # stop it ${argTwo}
                  /path/to/stop.sh --port ${PORT} ${argTwo} \\
                    --pid ${PID}
            """
        ),
        "c.yaml",
        {},
    )
    model = expand_document(doc.data, doc.locations)["models"]["model1"]
    assert stop_command_argv(model["cmdStop"], 55) == [
        "/path/to/stop.sh",
        "--port",
        "9990",
        "--arg2",
        "--pid",
        "55",
    ]


def test_s20_23_folded_macro_expands_to_one_argv() -> None:
    doc = load_text(
        textwrap.dedent(
            """
            startPort: 9990
            macros:
              latest-llama: >
                /user/llama.cpp/build/bin/llama-server
                --port ${PORT}
            models:
              model1:
                cmd: |
                  # ${latest-llama} is a macro
                  ${latest-llama}
                  --model /path/to/model.gguf
                  -ngl 99
            """
        ),
        "c.yaml",
        {},
    )
    cmd = expand_document(doc.data, doc.locations)["models"]["model1"]["cmd"]
    assert " ".join(split_command(cmd)) == (
        "/user/llama.cpp/build/bin/llama-server --port 9990 --model /path/to/model.gguf -ngl 99"
    )
