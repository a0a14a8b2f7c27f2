// One WebSocket to the server: JSON control messages, and each Frame header
// followed by its JPEG as a binary message. Reconnects by itself and says
// so; whoever uses it re-sends what it needs when the state is `open`
// again. A server restarting (1012) or going away (1001) is reconnected
// at once (a proxy sends the new session to another server); a lost
// connection with a growing delay. A session the server closed for being
// idle (1000, "idle timeout") reconnects only when the page next sends
// something.

export class Connection {
  constructor(url, handlers) {
    this.url = url;
    // { onstate(state, detail), onframe(header, jpeg), onframeerror(msg), onerror(msg), onmessage(msg) }
    this.handlers = handlers;
    this.pendingHeader = null;
    this.retryDelay = 250;
    this.bytesReceived = 0;
    this.state = 'connecting';
    this.open();
  }

  open() {
    this.setState('connecting');
    // The URL may be a function, so a token typed in later is used on reconnect.
    const socket = new WebSocket(typeof this.url === 'function' ? this.url() : this.url);
    socket.binaryType = 'arraybuffer';
    socket.onopen = () => {
      this.retryDelay = 250;
      this.pendingHeader = null;
      this.setState('open');
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      if (event.code === 1000 && event.reason === 'idle timeout') {
        this.idle = true;
        this.setState('closed', 'idle; reconnects when used');
        return;
      }
      if (event.code === 1012 || event.code === 1001) {
        this.setState('closed', 'the server is restarting; reconnecting');
        this.open();
        return;
      }
      const seconds = (this.retryDelay / 1000).toFixed(1);
      this.setState('closed', `reconnecting in ${seconds} s`);
      setTimeout(() => this.open(), this.retryDelay);
      this.retryDelay = Math.min(this.retryDelay * 2, 5000);
    };
    this.socket = socket;
  }

  /// Closes for good: no reconnect.
  close() {
    this.closed = true;
    this.socket?.close(1000, 'closed by the page');
    this.socket = null;
  }

  setState(state, detail = '') {
    this.state = state;
    this.handlers.onstate(state, detail);
  }

  get isOpen() {
    return this.socket?.readyState === WebSocket.OPEN;
  }

  send(message) {
    if (this.idle && !this.socket) {
      this.idle = false;
      this.open(); // what the page shows is re-requested once it is open
    }
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  receive(data) {
    if (data instanceof ArrayBuffer) {
      this.bytesReceived += data.byteLength;
      const header = this.pendingHeader;
      this.pendingHeader = null;
      if (header) this.handlers.onframe(header, data);
      return;
    }
    this.bytesReceived += data.length;
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this.handlers.onerror(`the server sent something unreadable: ${data.slice(0, 80)}`);
      return;
    }
    switch (message.type) {
      case 'Frame':
        this.pendingHeader = message;
        break;
      case 'FrameError':
        this.handlers.onframeerror(message);
        break;
      case 'Error':
        this.handlers.onerror(message.message);
        break;
      case 'VideoSet':
        if (!message.ok) this.handlers.onerror(message.error);
        break;
      default:
        break;
    }
  }
}
