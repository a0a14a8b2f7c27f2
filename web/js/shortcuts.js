// Keyboard shortcuts (listed in the page's sidebar). Keys typed into form
// fields and chords with Ctrl/Cmd/Alt are left to the browser.

export function bindShortcuts(app) {
  const actions = {
    ' ': () => app.togglePlay(),
    k: () => app.togglePlay(),
    ArrowLeft: (event) => (event.shiftKey ? app.jumpKeyframe(-1) : app.step(-1)),
    ArrowRight: (event) => (event.shiftKey ? app.jumpKeyframe(1) : app.step(1)),
    ',': () => app.step(-1),
    '.': () => app.step(1),
    Home: () => app.step(-Infinity),
    End: () => app.step(Infinity),
    l: () => app.setLoop(!app.loop),
    '-': () => app.changeSpeed(-1),
    '+': () => app.changeSpeed(1),
    '=': () => app.changeSpeed(1),
  };
  document.addEventListener('keydown', (event) => {
    if (event.target.closest('input, select, textarea') || event.ctrlKey || event.metaKey || event.altKey) return;
    const action = actions[event.key.length === 1 ? event.key.toLowerCase() : event.key];
    if (!action) return;
    event.preventDefault(); // also keeps Space from clicking a focused button
    action(event);
  });
}
