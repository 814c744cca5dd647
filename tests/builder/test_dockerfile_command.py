"""The argv of RUN, heredocs included (BuildKit's dispatchRun rules)."""

import textwrap

from pybuild.dockerfile import parse, run_command

SH = ["/bin/sh", "-c"]


def run_of(text: str):
    d = parse("FROM scratch\n" + textwrap.dedent(text).lstrip("\n"))
    return d.stages[0].instructions[0]


def test_exec_and_shell_forms():
    assert run_command(run_of('RUN ["echo", "a b"]'), SH).argv == ["echo", "a b"]
    assert run_command(run_of("RUN echo $HOME"), SH).argv == ["/bin/sh", "-c", "echo $HOME"]
    assert run_command(run_of("RUN echo hi"), ["bash", "-ec"]).argv == ["bash", "-ec", "echo hi"]


def test_single_heredoc_is_the_script():
    r = run_command(run_of("""
        RUN <<EOT
          mkdir -p foo/bar
        EOT
    """), SH)
    assert r.argv == ["/bin/sh", "-c", "  mkdir -p foo/bar\n"] and r.files == {}


def test_single_heredoc_with_shebang_becomes_a_file():
    r = run_command(run_of("""
        RUN <<'EOT'
        #!/usr/bin/env python
        print("hello world")
        EOT
    """), SH)
    assert r.argv == ["/bin/sh", "-c", "/dev/pipes/EOT"]
    assert r.files == {"/dev/pipes/EOT": '#!/usr/bin/env python\nprint("hello world")\n'}


def test_heredoc_fed_to_a_command():
    r = run_command(run_of("""
        RUN <<EOT bash
          set -ex
        EOT
    """), SH)
    assert r.argv == ["/bin/sh", "-c", "<<EOT bash\n  set -ex\nEOT"]


def test_several_heredocs_are_put_back_for_the_shell():
    r = run_command(run_of("""
        RUN <<FILE1 cat > file1 && <<FILE2 cat > file2
        I am
        first
        FILE1
        I am
        second
        FILE2
    """), SH)
    assert r.argv[2] == ("<<FILE1 cat > file1 && <<FILE2 cat > file2\n"
                         "I am\nfirst\nFILE1\nI am\nsecond\nFILE2")


def test_reconstituted_script_runs_in_a_real_shell(tmp_path):
    import subprocess
    r = run_command(run_of("""
        RUN <<FILE1 cat > file1 && <<-'FILE2' cat > file2 && <<EOT sh
        I am $((1+1))
        FILE1
        	not $EXPANDED
        	FILE2
        echo from-sh
        EOT
    """), SH)
    out = subprocess.run(r.argv, cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout == "from-sh\n"
    assert (tmp_path / "file1").read_text() == "I am 2\n"
    assert (tmp_path / "file2").read_text() == "not $EXPANDED\n"
